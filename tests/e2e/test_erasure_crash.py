"""SIGKILL `closedloop privacy erase` and then `closedloop privacy resume` while they erase
(three kills in all): each kill leaves all of her data or none, never half; the request
stays `running`; the last resume completes it and nothing of hers remains (both backends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import privacy
from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.privacy._tables import privacy_erasures
from closedloop.profiles._tables import profiles
from tests.conftest import make_settings
from tests.profiles.conftest import Log, identify, track

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_HER_KEYS = ("u:anna", "e:anna@example.de", "p:+493511234567")


def _state(engine: Engine) -> tuple[str | None, int, int, int]:
    with engine.connect() as conn:
        state = conn.execute(sa.select(privacy_erasures.c.state)).scalar()
        her_events = conn.execute(
            sa.select(sa.func.count()).where(events.c.user_id == "anna")
        ).scalar_one()
        her_ids = conn.execute(
            sa.select(sa.func.count()).where(identities.c.key.in_(_HER_KEYS))
        ).scalar_one()
        others = conn.execute(
            sa.select(sa.func.count()).select_from(profiles).where(profiles.c.merged_into.is_(None))
        ).scalar_one()
    return state, her_events, her_ids, others


def _run(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "closedloop", "privacy", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def test_killed_erasure_is_all_or_nothing_and_resumes(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    log = Log(engine, make_settings(db_url))
    log.send(identify("anna", email="anna@example.de", phone="0351 1234567"))
    for start in range(0, 30_000, 5_000):
        log.send(*[track("Page Viewed", "anna", page=n) for n in range(start, start + 5_000)])
    log.send(identify("bob", email="bob@example.de"))
    log.process()
    assert _state(engine) == (None, 30_001, 3, 2)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CLOSEDLOOP_DATABASE_URL": db_url,
        "CLOSEDLOOP_SECRET_KEY": "test-secret-" + "y" * 20,
    }
    output = tmp_path / "erase.log"
    kills = 0
    killed_mid_run = 0
    proc = _run(["erase", "--user-id", "anna"], env, output)
    for attempt in range(3):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill as soon as the erasure is under way
            if _state(engine)[0] is not None or proc.poll() is not None:
                break
            time.sleep(0.005)
        time.sleep(0.02 * attempt)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
        state, her_events, her_ids, others = _state(engine)
        assert (her_events, her_ids) in ((30_001, 3), (0, 0)), (her_events, her_ids)  # no half
        assert others == (2 if her_events else 1)
        if state == "running" and her_events:
            killed_mid_run += 1
        if state == "done":
            break
        proc = _run(["resume", "--force"], env, output)
    proc.wait(60)
    assert kills >= 1 and killed_mid_run >= 1, output.read_text()
    if _state(engine)[0] != "done":
        resumed = _run(["resume", "--force"], env, output)
        assert resumed.wait(60) == 0, output.read_text()
    assert _state(engine) == ("done", 0, 0, 1)
    (erasure,) = privacy.list_erasures(engine)
    assert erasure.attempts >= 2 and erasure.counts["events"] == 30_001

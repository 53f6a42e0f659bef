"""Kill `closedloop worker` with SIGKILL in the middle of its batches, several times: after a
restart no event is applied twice and none is skipped, and the state equals a rebuild."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import profiles
from closedloop.demo import generate_shop
from closedloop.profiles._tables import processor_cursors
from closedloop.profiles._tables import profiles as profiles_table
from tests.conftest import make_settings
from tests.profiles.conftest import Log
from tests.profiles.test_processor import snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILLS = 3


@pytest.fixture
def log(engine: Engine, db_url: str) -> Log:
    return Log(engine, make_settings(db_url))


def _cursor(log: Log) -> int:
    with log.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(processor_cursors.c.event_id).where(processor_cursors.c.name == "main")
            ).scalar_one()
        )


def test_worker_killed_mid_batch_applies_every_event_once(
    log: Log, db_url: str, tmp_path: Path
) -> None:
    messages = list(generate_shop(customers=600, days=30, now=datetime(2026, 11, 22, tzinfo=UTC)))
    for start in range(0, len(messages), 1000):
        log.send(*messages[start : start + 1000])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CLOSEDLOOP_DATABASE_URL": db_url,
        "CLOSEDLOOP_SECRET_KEY": "test-secret-" + "y" * 20,
    }
    command = [sys.executable, "-m", "closedloop", "worker", "--batch-events", "40"]
    positions = []
    for _ in range(KILLS):
        before = _cursor(log)
        with (tmp_path / "worker.log").open("ab") as errors:
            proc = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=errors
            )
        deadline = time.monotonic() + 60
        while _cursor(log) <= before + 200 and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        positions.append(_cursor(log))
    assert positions == sorted(positions)
    with log.engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT max(id) FROM events")).scalar_one()
    assert positions[0] > 0 and positions[-1] < newest  # killed mid-way: work was left
    finish = subprocess.run(
        [*command, "--once"], cwd=tmp_path, env=env, capture_output=True, timeout=300, check=False
    )
    assert finish.returncode == 0, finish.stderr
    assert profiles.lag(log.engine).events == 0
    with log.engine.connect() as conn:
        counted = sum(
            c["events"]
            for c in conn.execute(
                sa.select(profiles_table.c.computed).where(profiles_table.c.merged_into.is_(None))
            ).scalars()
        )
    assert counted == len(messages)
    after_kills = snapshot(log.engine)
    profiles.rebuild(log.engine, log.settings)
    assert snapshot(log.engine) == after_kills

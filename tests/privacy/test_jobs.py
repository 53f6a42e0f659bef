"""Retention and resumable erasure on both backends; the privacy API's answers to bad input;
the `closedloop privacy` commands."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from closedloop import clock, privacy
from closedloop.cli import app as cli_app
from closedloop.ingest._tables import events, failed_events
from closedloop.privacy import registry
from closedloop.privacy._tables import privacy_audit, privacy_erasures
from closedloop.profiles._tables import profiles
from closedloop.web import create_app
from tests.conftest import ADMIN_TOKEN
from tests.profiles.conftest import RECEIVED, Log, identify, track

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    yield
    clock.set_clock(None)


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_retention_leaves_nothing_past_its_limit(log: Log, engine: Engine, tmp_path: Path) -> None:
    log.send(identify("c-1", email="a@example.de"), track("Viewed", "c-1"))
    log.process()
    with engine.begin() as conn:
        conn.execute(
            failed_events.insert().values(
                origin="http:/v1/batch[0]", reason="bad", payload="{}", received_at=RECEIVED
            )
        )
    exports = tmp_path / "exports"
    (exports / "crm").mkdir(parents=True)
    old_file = exports / "crm" / "old.csv"
    old_file.write_text("x")
    os.utime(old_file, (RECEIVED.timestamp(), RECEIVED.timestamp()))
    settings = log.settings.model_copy(
        update={
            "feeds": log.settings.feeds.model_copy(
                update={"local_dir": exports, "staging_dir": tmp_path / "staging"}
            )
        }
    )
    first = privacy.apply_retention(engine, settings)  # nothing is old yet
    assert first["events"] == 0 and first["failed_events"] == 0 and first["feed_files"] == 0
    later = RECEIVED + timedelta(days=31)
    clock.set_clock(lambda: later)
    second = privacy.apply_retention(engine, settings)
    assert second["failed_events"] == 1 and second["events"] == 0
    assert old_file.exists()  # 90 days for files
    clock.set_clock(lambda: RECEIVED + timedelta(days=731))
    third = privacy.apply_retention(engine, settings)
    assert third["events"] == 2 and third["feed_files"] == 1 and not old_file.exists()
    assert _count(engine, events) == 0 and _count(engine, failed_events) == 0
    assert _count(engine, profiles) == 1  # what was derived stays
    with engine.connect() as conn:
        runs = (
            conn.execute(
                sa.select(privacy_audit.c.details).where(privacy_audit.c.action == "retention")
            )
            .scalars()
            .all()
        )
    assert len(runs) == 3
    assert privacy.run_privacy_once is not None


def test_interrupted_erasure_resumes(
    log: Log, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.send(identify("c-1", email="a@example.de"), identify("c-2", email="b@example.de"))
    log.process()
    real = registry.REGISTRY

    def broken(conn: Any, subject: Any) -> int:
        raise RuntimeError("killed mid-erasure")

    entries = tuple(
        registry.Entry(e.table, e.personal, e.note, broken, e.export)
        if str(e.table.name) == "identities"
        else e
        for e in real
    )
    monkeypatch.setattr("closedloop.privacy.erasure.REGISTRY", entries)
    first = privacy.request_erasure(
        engine, log.settings, kind="user_id", value="c-1", requested_by="test"
    )
    assert first.state == "running" and "interrupted" in (first.error or "")
    assert _count(engine, profiles) == 2  # rolled back as a whole
    # her identifiers are suppressed already: new events of hers are dropped meanwhile
    log.send(track("Viewed", "c-1"))
    log.process()
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).where(events.c.user_id == "c-1")).scalar_one()
            == 1
        )  # the identify only; the new track was dropped
        assert conn.execute(sa.select(privacy_erasures.c.profile_ids)).scalar_one()
    monkeypatch.setattr("closedloop.privacy.erasure.REGISTRY", real)
    assert privacy.resume_erasures(engine, log.settings) == 0  # its lease has not expired
    clock.set_clock(lambda: datetime.now(UTC) + timedelta(minutes=6))
    privacy.run_privacy_once(engine, log.settings)
    done = privacy.get_erasure(engine, first.id)
    assert done.state == "done" and done.attempts == 2 and done.counts["profiles"] == 1
    assert log.live_profiles() == [log.profile_of("user_id", "c-2")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(privacy_erasures.c.profile_ids)).scalar_one() is None


def test_privacy_api_bad_input(engine: Engine, db_url: str) -> None:
    from tests.conftest import make_settings

    settings = make_settings(db_url)
    with TestClient(create_app(settings, engine=engine)) as client:
        url = "/v1/privacy/erasures"
        cases: list[tuple[Any, str]] = [
            ({}, "email"),
            ({"email": "a@example.de", "phone": "0351 1"}, "email"),
            ({"mail": "a@example.de"}, "mail"),
            ({"email": 42}, "email"),
            ({"email": "not-an-address"}, "email"),
            ({"email": "x" * 5000 + "@example.de"}, "email"),
            ({"user_id": "a\x00b"}, "user_id"),
            ({"customer_key": "v1.zz"}, "customer_key"),
            ({"profile_id": "p" * 41}, "profile_id"),
            ({"email": "a@example.de", "requested_by": ["x"]}, "requested_by"),
        ]
        for body, field in cases:
            answer = client.post(url, json=body, headers=ADMIN)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"]["field"] == field, (body, answer.json())
        assert client.post(url, content=b"{not json", headers=ADMIN).status_code in (400, 422)
        assert client.post(url, json=["email"], headers=ADMIN).status_code in (400, 422)
        assert client.post(url, json={"email": "a@example.de"}).status_code == 401
        write = {"Authorization": "Basic d3JpdGVrZXk6"}
        assert client.post(url, json={"email": "a@example.de"}, headers=write).status_code == 401
        assert client.get("/v1/privacy/exports?email=a@example.de").status_code == 401
        missing = client.get("/v1/privacy/exports", params={"email": "a@example.de"}, headers=ADMIN)
        assert missing.status_code == 404
        assert client.get("/v1/privacy/exports", headers=ADMIN).status_code == 400
        assert client.get("/v1/privacy/erasures/er_nope", headers=ADMIN).status_code == 404
        # someone unknown is suppressed all the same
        unknown = client.post(url, json={"email": "Nobody@Example.de"}, headers=ADMIN)
        assert unknown.status_code == 201 and unknown.json()["state"] == "done"
        listed = client.get("/v1/privacy/erasures", headers=ADMIN).json()["items"]
        assert [e["id"] for e in listed] == [unknown.json()["id"]]
        assert "nobody" not in json.dumps(listed).lower()


def test_privacy_cli(log: Log, engine: Engine, db_url: str, tmp_path: Path) -> None:
    log.send(identify("c-1", email="anna@example.de", phone="0351 1234567"))
    log.process()
    env = {
        "CLOSEDLOOP_DATABASE_URL": db_url,
        "CLOSEDLOOP_SECRET_KEY": "test-secret-" + "y" * 20,
        "CLOSEDLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    runner = CliRunner()
    out = tmp_path / "anna.json"
    exported = runner.invoke(
        cli_app, ["privacy", "export", "--phone", "+49 351 1234567", "-o", str(out)], env=env
    )
    assert exported.exit_code == 0, exported.output
    document = json.loads(out.read_text())
    assert document["identifiers"] and document["tables"]["events"]
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    both = runner.invoke(
        cli_app, ["privacy", "erase", "--email", "x@example.de", "--user-id", "1"], env=env
    )
    assert both.exit_code != 0 and "exactly one" in both.output
    erased = runner.invoke(
        cli_app,
        ["privacy", "erase", "--email", "ANNA@example.de", "--by", "ticket 1", "--json"],
        env=env,
    )
    assert erased.exit_code == 0, erased.output
    assert json.loads(erased.output)["state"] == "done"
    assert log.live_profiles() == []
    listed = runner.invoke(cli_app, ["privacy", "erasures"], env=env)
    assert listed.exit_code == 0 and "done" in listed.output
    audit = runner.invoke(cli_app, ["privacy", "audit", "--json"], env=env)
    assert audit.exit_code == 0
    actions = [e["action"] for e in json.loads(audit.output)]
    assert actions[:3] == ["erasure_done", "erasure_requested", "export"]
    assert "anna" not in audit.output
    for command in (["privacy", "retention"], ["privacy", "rotate-key"], ["privacy", "resume"]):
        result = runner.invoke(cli_app, command, env=env)
        assert result.exit_code == 0, (command, result.output)
    missing = runner.invoke(cli_app, ["privacy", "export", "--email", "anna@example.de"], env=env)
    assert missing.exit_code == 1 and "nobody" in missing.output


def _events_mentioning(engine: Engine, text: str) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.id, events.c.payload).order_by(events.c.id))
        return [i for i, payload in rows if text in json.dumps(payload).lower()]


@pytest.mark.parametrize("erased", ["berta", "anna"])
def test_erasure_takes_her_events_under_anothers_anonymous_id_and_only_hers(
    engine: Engine, log: Log, erased: str
) -> None:
    """Berta fills in a newsletter form on the family tablet, whose anonymous id is Anna's:
    the event is Berta's (by her e-mail). Erasing Berta takes it, with her address; erasing
    Anna leaves it."""
    log.send(identify("anna", "family-tablet", email="anna@example.com"))
    log.send(track("Viewed", anonymous_id="family-tablet"))
    log.send(identify("berta", "berta-phone", email="berta@example.com"))
    log.send(identify(None, "family-tablet", email="Berta@Example.com", newsletter=True))
    log.process()
    assert len(_events_mentioning(engine, "berta@example.com")) == 2
    done = privacy.request_erasure(
        engine, log.settings, kind="user_id", value=erased, requested_by="test"
    )
    assert done.state == "done"
    other = "anna" if erased == "berta" else "berta"
    assert _events_mentioning(engine, f"{erased}@example.com") == []
    assert len(_events_mentioning(engine, f"{other}@example.com")) == (
        2 if other == "berta" else 1  # her identify, and the form
    )
    with engine.connect() as conn:
        tablet = conn.execute(
            sa.select(sa.func.count()).where(events.c.anonymous_id == "family-tablet")
        ).scalar_one()
    # Anna's identify and view stay with Berta's erasure; Berta's form stays with Anna's.
    assert tablet == (3 - 2 if erased == "anna" else 3 - 1)
    exported = privacy.export_subject(
        engine, log.settings, kind="user_id", value=other, requested_by="test"
    )
    assert len(exported["tables"]["events"]) == 2

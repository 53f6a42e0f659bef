"""The demo shop goes through the real HTTP API and covers every touchpoint."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.demo import generate_shop, send_demo
from closedloop.identity._tables import identity_conflicts, identity_merges
from closedloop.profiles._tables import profiles as profiles_table
from tests.conftest import LiveServer
from tests.helpers import failed, stored

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    value = row["payload"]
    return value if isinstance(value, dict) else orjson.loads(value)


def test_demo_shop_has_every_touchpoint_and_clean_master_data() -> None:
    messages = list(generate_shop(customers=200, days=90, seed=3, now=NOW))
    events = {m.get("event") for m in messages if m["type"] == "track"}
    assert {"Order Completed", "Newsletter Subscribed", "Newsletter Unsubscribed"} <= events
    assert any("NPS" in (e or "") for e in events)
    paths = {(m.get("properties") or {}).get("path") for m in messages if m["type"] == "page"}
    assert {"/account/vertrag", "/account/kuendigung"} <= paths
    traits = [
        m["traits"] for m in messages if m["type"] == "identify" and "email" in m.get("traits", {})
    ]
    keys = {"email", "firstName", "lastName", "gender", "phone", "postalCode", "city", "createdAt"}
    assert traits and all(keys <= set(t) for t in traits)
    postal_codes = [t["postalCode"] for t in traits]
    assert any(isinstance(p, str) and p.startswith("0") for p in postal_codes)
    assert any(isinstance(p, int) for p in postal_codes)  # the lost leading zero
    assert {t["gender"] for t in traits} > {"female", "male", "w", "Herr"}
    assert all(m["timestamp"] <= NOW.isoformat() for m in messages)
    again = list(generate_shop(customers=200, days=90, seed=3, now=NOW))
    assert [m["messageId"] for m in again] == [m["messageId"] for m in messages]


def test_demo_is_sent_through_the_api_once(live_server: LiveServer, engine: Engine) -> None:
    key = ingest.add_source(engine, "demo", kind="web").write_key
    report = send_demo(live_server.url, key, customers=25, days=30, seed=5, now=NOW)
    assert report.failed_events == 0
    assert report.events > 25
    rows = stored(engine)
    assert len(rows) == report.events
    assert failed(engine) == []
    identified = [_payload(r) for r in rows if r["type"] == "identify"]
    assert identified and any(p["traits"].get("email") for p in identified)
    resent = send_demo(live_server.url, key, customers=25, days=30, seed=5, now=NOW)
    assert resent.events == report.events
    assert len(stored(engine)) == report.events  # the same shop again stores nothing twice


def test_demo_shop_shows_journeys_conflicts_calls_and_messy_master_data(
    engine: Engine, db_url: str
) -> None:
    from tests.conftest import make_settings
    from tests.profiles.conftest import Log

    log = Log(engine, make_settings(db_url))
    messages = list(generate_shop(customers=300, days=60, seed=7, now=NOW))
    for start in range(0, len(messages), 500):
        log.send(*messages[start : start + 500], source="demo")
    log.process()
    with engine.connect() as conn:
        merges = conn.execute(sa.select(identity_merges.c.via)).scalars().all()
        conflicts = conn.execute(sa.select(identity_conflicts.c.reason)).scalars().all()
        live = conn.execute(
            sa.select(profiles_table).where(profiles_table.c.merged_into.is_(None))
        ).all()
    assert "anonymous_id" in merges  # second devices merged at login
    assert "different_user_ids" in conflicts  # the family tablet
    known = [p for p in live if p.masterdata.get("email")]
    calls = [m for m in messages if m.get("anonymousId", "").startswith("call-")]
    assert calls
    for call in calls:
        pid = log.profile_of("anonymous_id", call["anonymousId"])
        assert pid is not None and pid == log.profile_of("user_id", _customer_of(call)), call
    by_code = {p.masterdata["postal_code"] for p in known}
    assert {"01067", "04109"} & by_code
    assert all(
        p.masterdata["postal_code"] is None or len(p.masterdata["postal_code"]) == 5 for p in known
    )
    assert {p.masterdata["gender"] for p in known} == {"female", "male", "diverse"}
    flagged = [q for p in known for q in p.quality]
    assert flagged and all(q["field"] == "salutation" for q in flagged)


def _customer_of(call: dict[str, Any]) -> str:
    # call-<seed>-<index> belongs to cust-<index + 1>
    index = int(call["anonymousId"].rsplit("-", 1)[1])
    return f"cust-{index + 1:05d}"


def test_demo_survey_mails_answers_and_counts(
    live_server: LiveServer, engine: Engine, settings: Any, tmp_path: Any
) -> None:
    from closedloop import surveys
    from closedloop.config import SurveySettings
    from closedloop.demo.surveys import run_demo_survey

    key = ingest.add_source(engine, "demo", kind="web").write_key
    send_demo(live_server.url, key, customers=60, days=30, seed=5, now=NOW)
    config = settings.model_copy(update={"surveys": SurveySettings(outbox_dir=tmp_path / "out")})
    report = run_demo_survey(live_server.url, engine, config, share=0.5)
    assert report.mailed == report.invited > 0
    assert len(list((tmp_path / "out").glob("*.eml"))) == report.mailed
    assert 0 < report.answered < report.mailed
    stats = surveys.stats(engine, "nps-demo")
    assert stats["answered"] == report.answered and stats["nps"] == report.nps
    again = run_demo_survey(live_server.url, engine, config, share=0.0)
    assert again.invited == 0  # every identify was decided once

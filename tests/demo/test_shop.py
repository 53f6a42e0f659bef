"""The demo shop goes through the real HTTP API and covers every touchpoint."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.demo import generate_shop, send_demo
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
    traits = [m["traits"] for m in messages if m["type"] == "identify" and m.get("traits")]
    keys = {"email", "firstName", "lastName", "gender", "phone", "postalCode", "city", "createdAt"}
    assert traits and all(keys <= set(t) for t in traits)
    assert any(t["postalCode"].startswith("0") for t in traits)
    assert all(isinstance(t["postalCode"], str) for t in traits)
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
    assert identified and all(p["traits"].get("email") for p in identified)
    resent = send_demo(live_server.url, key, customers=25, days=30, seed=5, now=NOW)
    assert resent.events == report.events
    assert len(stored(engine)) == report.events  # the same shop again stores nothing twice

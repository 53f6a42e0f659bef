"""Replaying the requests the official SDKs really sent (shared/fixtures/sdk-recordings)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import ingest
from tests.helpers import stored

# Copied from shared/fixtures/sdk-recordings (one real request per SDK, recorded on loopback).
RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "sdk-recordings"
SEGMENT_KEY = "SEGMENT_WRITE_KEY_abc123"
RUDDER_KEY = "RUDDER_WRITE_KEY_abc123"


def _recording(name: str) -> dict[str, Any]:
    path = RECORDINGS / name
    if not path.exists():
        pytest.skip(f"recordings not found at {RECORDINGS}")
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    return record


def _replay(client: TestClient, record: dict[str, Any]) -> Any:
    raw = record["body_raw"]
    body = raw["text"].encode() if "text" in raw else base64.b64decode(raw["base64"])
    skip = {"host", "content-length", "connection"}
    headers = {k: v for k, v in record["headers"] if k.lower() not in skip}
    return client.post(record["path"], content=body, headers=headers)


@pytest.mark.parametrize(
    ("name", "key", "library"),
    [
        ("segment-analytics-python.basic.jsonl", SEGMENT_KEY, "analytics-python"),
        ("rudder-sdk-python.basic.jsonl", RUDDER_KEY, "analytics-python"),
        ("analytics-node.basic.jsonl", SEGMENT_KEY, "@segment/analytics-node"),
    ],
)
def test_recorded_sdk_request_stores_every_call(
    client: TestClient, engine: Engine, name: str, key: str, library: str
) -> None:
    ingest.add_source(engine, "recorded", kind="server", write_key=key)
    record = _recording(name)
    response = _replay(client, record)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    rows = stored(engine)
    sent = record["json"]["batch"]
    assert [r["message_id"] for r in rows] == [m["messageId"] for m in sent]
    assert sorted(r["type"] for r in rows) == sorted(
        ["identify", "track", "page", "alias", "group", "screen"]
    )
    by_type = {r["type"]: r for r in rows}
    identify = by_type["identify"]
    assert identify["user_id"] == "user-123"
    assert identify["payload"]["traits"]["email"] == "peter@example.com"
    assert identify["payload"]["traits"]["lastName"] == "Gibbons"
    assert by_type["track"]["event"] == "Article Rated"
    assert by_type["track"]["payload"]["properties"] == {"rating": 4}
    assert by_type["page"]["payload"]["properties"]["path"] == "/account/kuendigung"
    assert by_type["alias"]["payload"]["previousId"]
    assert by_type["group"]["payload"]["groupId"]
    assert all(r["payload"]["context"]["library"]["name"] == library for r in rows)
    # A retry of the same request stores nothing twice.
    assert _replay(client, record).status_code == 200
    assert len(stored(engine)) == len(rows)


def test_recordings_have_the_shapes_we_rely_on() -> None:
    rudder = _recording("rudder-sdk-python.basic.jsonl")
    assert ["Content-Encoding", "gzip"] in rudder["headers"]
    identify = next(m for m in rudder["json"]["batch"] if m["type"] == "identify")
    assert "traits" not in identify and "traits" in identify["context"]
    node = _recording("analytics-node.basic.jsonl")
    assert all(m["timestamp"].endswith("Z") for m in node["json"]["batch"])


def test_posthog_requests_are_not_taken_for_segment(client: TestClient, engine: Engine) -> None:
    record = _recording("posthog-python.basic.jsonl")
    response = _replay(client, record)
    assert response.status_code == 404
    assert stored(engine) == []

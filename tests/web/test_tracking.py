from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import clock, ingest
from tests.helpers import basic, failed, stored, track


def test_track_is_stored_and_answered_with_exactly_200(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    message = track()
    response = client.post("/v1/track", json=message, headers=basic(source.write_key))
    assert response.status_code == 200
    assert response.json() == {"success": True}
    [row] = stored(engine)
    assert row["message_id"] == message["messageId"]
    assert row["type"] == "track"
    assert row["event"] == "Article Rated"
    assert row["user_id"] == "user-1"
    assert row["payload"]["properties"] == {"rating": 4}


def test_each_call_type_has_its_route(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    calls = {
        "identify": {"userId": "u1", "traits": {"email": "a@example.com"}},
        "track": {"userId": "u1", "event": "Order Completed"},
        "page": {
            "anonymousId": "a1",
            "name": "Kündigung",
            "properties": {"path": "/account/kuendigung"},
        },
        "screen": {"userId": "u1", "name": "Home"},
        "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "ACME"}},
        "alias": {"previousId": "a1", "userId": "u1"},
    }
    for call, body in calls.items():
        response = client.post(f"/v1/{call}", json=body, headers=basic(source.write_key))
        assert response.status_code == 200, (call, response.text)
    rows = stored(engine)
    assert [r["type"] for r in rows] == list(calls)
    assert rows[2]["event"] == "Kündigung"
    generated = {r["message_id"] for r in rows}  # generated when missing: unique, marked
    assert len(generated) == len(rows)
    assert all(m.startswith("cl-") for m in generated)


def test_write_key_in_body_is_accepted_and_not_stored(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    response = client.post("/v1/track", json=track(writeKey=source.write_key))
    assert response.status_code == 200
    [row] = stored(engine)
    assert "writeKey" not in row["payload"]
    assert source.write_key not in orjson.dumps(row["payload"]).decode()


def test_gzip_batch_is_accepted(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track(), track(type="page", name="Home")]}))
    response = client.post(
        "/v1/batch",
        content=body,
        headers={
            **basic(source.write_key),
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.text
    assert [r["type"] for r in stored(engine)] == ["track", "page"]


def test_duplicate_message_is_acknowledged_and_stored_once(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    message = track()
    for _ in range(3):
        assert (
            client.post("/v1/track", json=message, headers=basic(source.write_key)).status_code
            == 200
        )
    batch = {"batch": [message, message, track()]}
    assert client.post("/v1/batch", json=batch, headers=basic(source.write_key)).status_code == 200
    assert len(stored(engine)) == 2
    metrics = client.get("/metrics").text
    assert 'closedloop_events_deduplicated_total{source="shop-web"} 4.0' in metrics


def test_duplicate_is_ignored_after_a_week(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    message = track()
    client.post("/v1/track", json=message, headers=basic(source.write_key))
    with clock.frozen(datetime.now(UTC) + timedelta(days=8)):
        client.post("/v1/track", json=message, headers=basic(source.write_key))
    assert len(stored(engine)) == 1


def test_one_bad_event_does_not_sink_the_batch(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    good = [track() for _ in range(99)]
    bad = track(event=None)
    batch = {"batch": [*good[:50], bad, *good[50:]]}
    response = client.post("/v1/batch", json=batch, headers=basic(source.write_key))
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["failed"] == [
        {
            "index": 50,
            "messageId": bad["messageId"],
            "field": "event",
            "reason": "`event` is required for track",
            "code": "missing_field",
        }
    ]
    assert len(stored(engine)) == 99
    [kept] = failed(engine)
    assert kept["message_id"] == bad["messageId"]
    assert kept["field"] == "event"
    assert kept["origin"] == "http:/v1/batch[50]"
    assert orjson.loads(kept["payload"])["userId"] == "user-1"


def test_sdk_payload_variants_are_accepted(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    batch = {
        "batch": [
            # segment-python: explicit nulls, ms and +00:00
            track(
                anonymousId=None,
                integrations={},
                category=None,
                timestamp="2026-11-22T10:50:31.543+00:00",
            ),
            # rudder: traits only in context, µs, channel, integrations All
            {
                "type": "identify",
                "userId": "u2",
                "anonymousId": None,
                "channel": "server",
                "integrations": {"All": True},
                "timestamp": "2026-11-22T10:50:31.338995+00:00",
                "context": {"traits": {"email": "peter@example.com"}},
            },
            # node: Z, _metadata, no nulls
            track(timestamp="2026-11-22T10:50:31.127Z", _metadata={"nodeVersion": "v20"}),
            # numeric user id, offset time
            track(userId=12345, timestamp="2026-11-22T11:50:31+01:00"),
        ],
        "sentAt": None,
    }
    response = client.post("/v1/batch", json=batch, headers=basic(source.write_key))
    assert response.status_code == 200
    assert "failed" not in response.json()
    rows = stored(engine)
    assert rows[1]["payload"]["traits"] == {"email": "peter@example.com"}
    assert rows[2]["timestamp"] == datetime(2026, 11, 22, 10, 50, 31, 127000, tzinfo=UTC)
    assert rows[3]["user_id"] == "12345"
    assert rows[3]["timestamp"] == datetime(2026, 11, 22, 10, 50, 31, tzinfo=UTC)


def test_clock_skew_is_corrected_with_sent_at(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    received = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    # The device clock is one hour fast: it says 13:00:05 at sending, event at 13:00:00.
    batch = {"batch": [track(timestamp="2026-11-22T13:00:00Z")], "sentAt": "2026-11-22T13:00:05Z"}
    with clock.frozen(received):
        assert (
            client.post("/v1/batch", json=batch, headers=basic(source.write_key)).status_code == 200
        )
    [row] = stored(engine)
    assert row["timestamp"] == received - timedelta(seconds=5)
    assert row["original_timestamp"] == datetime(2026, 11, 22, 13, 0, 0, tzinfo=UTC)
    assert row["received_at"] == received
    assert row["payload"]["originalTimestamp"] == "2026-11-22T13:00:00+00:00"


def test_missing_timestamp_means_received_at(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    received = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    with clock.frozen(received):
        client.post("/v1/track", json=track(timestamp=None), headers=basic(source.write_key))
    [row] = stored(engine)
    assert row["timestamp"] == received
    assert row["original_timestamp"] is None


def test_envelope_context_is_merged_into_each_message(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    batch = {"batch": [track(context={"ip": "1.2.3.4"}), track()], "context": {"locale": "de-DE"}}
    client.post("/v1/batch", json=batch, headers=basic(source.write_key))
    rows = stored(engine)
    assert rows[0]["payload"]["context"] == {"locale": "de-DE", "ip": "1.2.3.4"}
    assert rows[1]["payload"]["context"] == {"locale": "de-DE"}


def test_disabled_source_gets_401_and_enabled_again_works(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    assert (
        client.patch(
            "/v1/sources/shop-web", json={"enabled": False}, headers=admin_headers
        ).status_code
        == 200
    )
    client.app.state.ctx.keys._cache.clear()  # type: ignore[attr-defined]
    response = client.post("/v1/track", json=track(), headers=basic(source.write_key))
    assert response.status_code == 401
    assert "disabled" in response.json()["error"]["message"]
    client.patch("/v1/sources/shop-web", json={"enabled": True}, headers=admin_headers)
    client.app.state.ctx.keys._cache.clear()  # type: ignore[attr-defined]
    assert (
        client.post("/v1/track", json=track(), headers=basic(source.write_key)).status_code == 200
    )


def test_rotated_key_replaces_the_old_one(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    new_key = client.post("/v1/sources/shop-web/rotate", headers=admin_headers).json()["write_key"]
    client.app.state.ctx.keys._cache.clear()  # type: ignore[attr-defined]
    assert (
        client.post("/v1/track", json=track(), headers=basic(source.write_key)).status_code == 401
    )
    assert client.post("/v1/track", json=track(), headers=basic(new_key)).status_code == 200


def test_write_key_cannot_read(client: TestClient, source: ingest.NewSourceKey) -> None:
    for path in ("/v1/events", "/v1/failed-events", "/v1/sources"):
        response = client.get(path, headers=basic(source.write_key))
        assert response.status_code == 401, path
    response = client.get("/v1/events", headers={"Authorization": f"Bearer {source.write_key}"})
    assert response.status_code == 401

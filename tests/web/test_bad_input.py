"""Bad, oversized, missing and hostile input: a clear answer naming the field, nothing lost."""

from __future__ import annotations

import base64
import gzip
import zlib
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import ingest
from tests.helpers import basic, failed, stored, track


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


# (name, message overrides, status, field, fragment of the message)
BAD_MESSAGES: list[tuple[str, dict[str, Any], int, str, str]] = [
    (
        "no ids",
        {"userId": None, "anonymousId": None},
        400,
        "userId",
        "`userId` or `anonymousId` is required",
    ),
    ("empty ids", {"userId": "", "anonymousId": ""}, 400, "userId", "is required"),
    ("track without event", {"event": None}, 400, "event", "`event` is required for track"),
    ("event not a string", {"event": {"x": 1}}, 400, "event", "expected a string"),
    ("userId too long", {"userId": "u" * 256}, 400, "userId", "256 characters long: at most 255"),
    ("anonymousId too long", {"anonymousId": "a" * 300}, 400, "anonymousId", "at most 255"),
    ("userId is an object", {"userId": {"id": 1}}, 400, "userId", "expected a string"),
    ("userId is a boolean", {"userId": True}, 400, "userId", "expected a string"),
    (
        "messageId of 101 characters",
        {"messageId": "m" * 101},
        400,
        "messageId",
        "101 characters long: at most 100",
    ),
    ("messageId not a string", {"messageId": 42}, 400, "messageId", "expected a string"),
    ("year 10000", {"timestamp": "10000-01-01T00:00:00Z"}, 400, "timestamp", "ISO-8601"),
    ("month 13", {"timestamp": "2024-13-01T00:00:00Z"}, 400, "timestamp", "`2024-13-01T00:00:00Z`"),
    (
        "timestamp as a number",
        {"timestamp": 1732272631},
        400,
        "timestamp",
        "ISO-8601 date-time string",
    ),
    (
        "properties not an object",
        {"properties": "rating=4"},
        400,
        "properties",
        "expected an object",
    ),
    ("context is a list", {"context": [1, 2]}, 400, "context", "expected an object"),
    ("nesting 100 deep", {"properties": _deep(100)}, 400, "", "deeper than 32 levels"),
    (
        "NUL in a property",
        {"properties": {"note": "a\x00b"}},
        400,
        "properties.note",
        "NUL character",
    ),
    ("NUL in userId", {"userId": "u\x00"}, 400, "userId", "NUL character"),
    (
        "event over 32 KB",
        {"properties": {"blob": "x" * 33_000}},
        413,
        "",
        "at most 32768 are allowed per event",
    ),
    (
        "10k traits",
        {"type": "identify", "traits": {f"t{i}": i for i in range(10_000)}},
        413,
        "",
        "per event",
    ),
]


@pytest.mark.parametrize(
    ("name", "overrides", "status", "field", "fragment"),
    BAD_MESSAGES,
    ids=[b[0] for b in BAD_MESSAGES],
)
def test_bad_single_call_is_refused_with_the_field_and_kept(
    client: TestClient,
    engine: Engine,
    source: ingest.NewSourceKey,
    name: str,
    overrides: dict[str, Any],
    status: int,
    field: str,
    fragment: str,
) -> None:
    message = track(**overrides)
    path = f"/v1/{message['type']}"
    response = client.post(path, content=orjson.dumps(message), headers=basic(source.write_key))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert fragment in error["message"]
    assert stored(engine) == []
    [kept] = failed(engine)
    assert kept["field"] == (field or None)
    assert fragment in kept["reason"]


@pytest.mark.parametrize(
    ("name", "overrides", "status", "field", "fragment"),
    BAD_MESSAGES,
    ids=[b[0] for b in BAD_MESSAGES],
)
def test_bad_event_in_a_batch_is_listed_and_good_ones_kept(
    client: TestClient,
    engine: Engine,
    source: ingest.NewSourceKey,
    name: str,
    overrides: dict[str, Any],
    status: int,
    field: str,
    fragment: str,
) -> None:
    good = [track(), track()]
    bad = track(**overrides)
    body = orjson.dumps({"batch": [good[0], bad, good[1]]})
    response = client.post("/v1/batch", content=body, headers=basic(source.write_key))
    assert response.status_code == 200, response.text
    [failure] = response.json()["failed"]
    assert failure["index"] == 1
    assert failure["field"] == field
    assert fragment in failure["reason"]
    assert [r["message_id"] for r in stored(engine)] == [g["messageId"] for g in good]
    assert len(failed(engine)) == 1


def _post(client: TestClient, path: str, content: bytes, headers: dict[str, str]) -> Any:
    return client.post(path, content=content, headers=headers)


def test_malformed_json_is_400(client: TestClient, source: ingest.NewSourceKey) -> None:
    response = _post(client, "/v1/track", b'{"type": "track", ', basic(source.write_key))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"
    assert "malformed JSON body" in response.json()["error"]["message"]


def test_invalid_utf8_is_400(client: TestClient, source: ingest.NewSourceKey) -> None:
    response = _post(
        client, "/v1/track", b'{"userId": "\xff\xfe", "event": "x"}', basic(source.write_key)
    )
    assert response.status_code == 400
    assert "malformed JSON body" in response.json()["error"]["message"]


def test_empty_body_is_400(client: TestClient, source: ingest.NewSourceKey) -> None:
    response = _post(
        client, "/v1/batch", b"", basic(source.write_key) | {"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "empty body: send a JSON object"


def test_array_body_on_a_single_route_is_400(
    client: TestClient, source: ingest.NewSourceKey
) -> None:
    response = _post(client, "/v1/track", b"[1, 2]", basic(source.write_key))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"


def test_batch_that_is_not_an_array_is_400(client: TestClient, source: ingest.NewSourceKey) -> None:
    response = _post(client, "/v1/batch", b'{"batch": {"a": 1}}', basic(source.write_key))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "batch"


def test_batch_without_batch_is_400(client: TestClient, source: ingest.NewSourceKey) -> None:
    response = _post(client, "/v1/batch", b'{"events": []}', basic(source.write_key))
    assert response.status_code == 400
    assert "`batch` is required" in response.json()["error"]["message"]


def test_batch_over_2500_events_is_413(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    body = orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2501})
    response = _post(client, "/v1/batch", body, basic(source.write_key))
    assert response.status_code == 413
    assert "2501 messages: at most 2500" in response.json()["error"]["message"]
    assert stored(engine) == []


def test_request_over_4_mb_is_413_before_reading(
    client: TestClient, source: ingest.NewSourceKey
) -> None:
    body = orjson.dumps({"batch": [track(properties={"x": "y" * 20_000}) for _ in range(220)]})
    assert len(body) > 4 * 1024 * 1024
    response = _post(client, "/v1/batch", body, basic(source.write_key))
    assert response.status_code == 413
    assert "request body is" in response.json()["error"]["message"]


def test_gzip_bomb_is_413(client: TestClient, source: ingest.NewSourceKey) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * (1 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 100_000  # 64 MiB of zeros
    response = _post(
        client, "/v1/batch", bomb, basic(source.write_key) | {"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "decompressed body is over 8388608 bytes" in response.json()["error"]["message"]


def test_invalid_gzip_is_400(client: TestClient, source: ingest.NewSourceKey) -> None:
    response = _post(
        client,
        "/v1/batch",
        b"not gzip at all",
        basic(source.write_key) | {"Content-Encoding": "gzip"},
    )
    assert response.status_code == 400
    assert "not valid gzip" in response.json()["error"]["message"]


def test_truncated_gzip_is_400(client: TestClient, source: ingest.NewSourceKey) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track()]}))[:-12]
    response = _post(
        client, "/v1/batch", body, basic(source.write_key) | {"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"


def test_unsupported_content_type_is_415(client: TestClient, source: ingest.NewSourceKey) -> None:
    response = _post(
        client,
        "/v1/track",
        b"userId=1",
        basic(source.write_key) | {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.json()["error"]["field"] == "Content-Type"


def test_text_plain_is_accepted_as_browsers_send_it(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    response = _post(
        client,
        "/v1/track",
        orjson.dumps(track()),
        basic(source.write_key) | {"Content-Type": "text/plain"},
    )
    assert response.status_code == 200
    assert len(stored(engine)) == 1


def test_unsupported_content_encoding_is_415(
    client: TestClient, source: ingest.NewSourceKey
) -> None:
    response = _post(
        client, "/v1/track", b"{}", basic(source.write_key) | {"Content-Encoding": "br"}
    )
    assert response.status_code == 415
    assert response.json()["error"]["field"] == "Content-Encoding"


def test_missing_write_key_is_401(client: TestClient) -> None:
    response = _post(client, "/v1/track", orjson.dumps(track()), {})
    assert response.status_code == 401
    assert "missing write key" in response.json()["error"]["message"]


def test_unknown_write_key_is_401(client: TestClient, engine: Engine) -> None:
    response = _post(client, "/v1/track", orjson.dumps(track()), basic("wk_not-a-key-of-ours"))
    assert response.status_code == 401
    assert "unknown write key" in response.json()["error"]["message"]
    assert failed(engine) == []


def test_invalid_basic_header_is_401(client: TestClient) -> None:
    response = _post(client, "/v1/track", orjson.dumps(track()), {"Authorization": "Basic %%%"})
    assert response.status_code == 401
    assert "invalid Basic authorization header" in response.json()["error"]["message"]


def test_unknown_type_in_batch_is_listed(client: TestClient, source: ingest.NewSourceKey) -> None:
    body = orjson.dumps({"batch": [track(type="delete"), {"userId": "x"}, "a string"]})
    response = _post(client, "/v1/batch", body, basic(source.write_key))
    assert response.status_code == 200
    failures = response.json()["failed"]
    assert [f["field"] for f in failures] == ["type", "type", ""]
    assert "expected one of identify, track" in failures[0]["reason"]
    assert "`type` is required" in failures[1]["reason"]
    assert "expected a JSON object" in failures[2]["reason"]


@pytest.mark.parametrize(
    ("call", "body", "field"),
    [
        ("alias", {"userId": "u1"}, "previousId"),
        ("alias", {"previousId": "a1"}, "userId"),
        ("group", {"userId": "u1"}, "groupId"),
    ],
)
def test_call_specific_ids_are_required(
    client: TestClient, source: ingest.NewSourceKey, call: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(f"/v1/{call}", json=body, headers=basic(source.write_key))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert f"`{field}` is required" in response.json()["error"]["message"]


def test_hostile_values_are_stored_as_plain_data(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    hostile = {
        "__proto__": {"admin": True},
        "constructor": {"prototype": {"x": 1}},
        "name": "<script>alert(1)</script>",
        "sql": "'; DROP TABLE events; --",
        "template": "{{ 7*7 }} ${7*7} script::alert(1)",
        "emoji": "K\u00fcndigung \U0001f600",
    }
    response = client.post(
        "/v1/track",
        json=track(properties=hostile, userId="'; DROP TABLE events; --"),
        headers=basic(source.write_key),
    )
    assert response.status_code == 200
    [row] = stored(engine)
    assert row["payload"]["properties"] == hostile
    assert row["user_id"] == "'; DROP TABLE events; --"


def test_basic_header_wins_over_body_key(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey
) -> None:
    other = ingest.add_source(engine, "shop-app", kind="app")
    token = base64.b64encode(f"{other.write_key}:".encode()).decode()
    client.post(
        "/v1/track",
        json=track(writeKey=source.write_key),
        headers={"Authorization": f"Basic {token}"},
    )
    [row] = stored(engine)
    assert row["source_id"] == other.source.id

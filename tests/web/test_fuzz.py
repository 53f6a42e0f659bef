"""Property tests: whatever a client sends, the tracking API answers with a clear status,
never a 500, and the good events of a batch are kept."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from closedloop import ingest
from tests.helpers import basic, stored, track

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_json = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_field_names = st.sampled_from(
    [
        "type",
        "userId",
        "anonymousId",
        "event",
        "messageId",
        "timestamp",
        "sentAt",
        "properties",
        "traits",
        "context",
        "integrations",
        "previousId",
        "groupId",
        "name",
    ]
)
# Messages that look like Segment messages with hostile values in their fields.
_messages = st.one_of(
    _json,
    st.dictionaries(_field_names, _json, max_size=8),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["track", "identify", "page", "alias", "group", "x"])},
        optional={
            "userId": _json,
            "anonymousId": _json,
            "event": _json,
            "timestamp": st.one_of(_json, st.datetimes().map(lambda d: d.isoformat())),
            "properties": _json,
        },
    ),
)
_FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(bad=st.lists(_messages, min_size=1, max_size=5))
def test_any_batch_is_answered_200_and_keeps_the_good_event(
    client: TestClient, engine: Engine, source: ingest.NewSourceKey, bad: list[Any]
) -> None:
    good = track(messageId=str(uuid.uuid4()))
    response = client.post(
        "/v1/batch",
        content=orjson.dumps({"batch": [*bad, good]}),
        headers={**basic(source.write_key), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    for failure in body.get("failed", []):
        assert 0 <= failure["index"] < len(bad)
        assert failure["reason"]
    assert good["messageId"] in {row["message_id"] for row in stored(engine)}


@_FUZZ
@given(body=_messages, route=st.sampled_from(["track", "identify", "page", "screen", "alias"]))
def test_any_single_call_gets_a_clear_status(
    client: TestClient, source: ingest.NewSourceKey, body: Any, route: str
) -> None:
    response = client.post(
        f"/v1/{route}",
        content=orjson.dumps(body),
        headers={**basic(source.write_key), "Content-Type": "application/json"},
    )
    assert response.status_code in (200, 400, 413), response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["message"]
        assert "field" in error


@_FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_get_a_clear_status(
    client: TestClient, source: ingest.NewSourceKey, raw: bytes
) -> None:
    response = client.post(
        "/v1/batch",
        content=raw,
        headers={**basic(source.write_key), "Content-Type": "application/json"},
    )
    assert response.status_code in (200, 400), response.text

"""Any event the tracking API accepts is processed: none stops the processor (a poison
event would stall every batch after it), the profiles read back through the API, and a
rebuild stores what incremental processing stored. Both backends."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop import ingest, profiles
from closedloop.config import IngestSettings
from closedloop.errors import InvalidInputError
from closedloop.ingest.log import append
from tests.profiles.conftest import RECEIVED, Log
from tests.profiles.test_processor import snapshot

_LIMITS = IngestSettings()

# The names the processor, the master data and the mood rules look at, and a few others.
_KEYS = st.sampled_from(
    [
        "email",
        "phone",
        "gender",
        "salutation",
        "name",
        "firstName",
        "lastName",
        "birthday",
        "createdAt",
        "address",
        "postalCode",
        "city",
        "country",
        "company",
        "consent",
        "categoryPreferences",
        "surveys",
        "category",
        "products",
        "revenue",
        "total",
        "score",
        "comment",
        "path",
        "channel",
        "page",
        "traits",
        "rating",
    ]
)
_ATOMS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["0351 1234567", "+49 351 1234567", " Anna@Example.COM ", "1067", "w"])
)
_JSON = st.recursive(
    _ATOMS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_KEYS | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_IDS = (
    st.none() | st.sampled_from(["u-1", "u-2", "u-3", "a-1", "a-2", "kiosk"]) | st.text(max_size=12)
)


@st.composite
def _messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["identify", "track", "page", "screen", "alias", "group"]))
    message: dict[str, Any] = {"type": kind, "messageId": str(uuid.uuid4())}
    for key, ids in (("userId", _IDS), ("anonymousId", _IDS), ("previousId", _IDS)):
        value = draw(ids)
        if value is not None:
            message[key] = value
    if kind == "track":
        message["event"] = draw(
            st.sampled_from(["Order Completed", "Product Viewed", "NPS Answered", "Rated"])
            | st.text(max_size=20)
        )
    for key in ("traits", "properties"):
        message[key] = draw(st.dictionaries(_KEYS, _JSON, max_size=5))
    message["context"] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "channel": _JSON,
                "traits": st.dictionaries(_KEYS, _JSON, max_size=4),
                "consent": st.fixed_dictionaries({"categoryPreferences": _JSON}) | _JSON,
                "page": st.fixed_dictionaries({"path": _JSON}) | _JSON,
            },
        )
    )
    return message


def _accepted(log: Log, messages: list[dict[str, Any]]) -> int:
    """Append what the tracking API's validation accepts (as its routes do); how many."""
    source_id = log.source("web")
    rows = []
    for message in messages:
        try:
            row = ingest.normalise_message(
                message,
                call_type=None,
                limits=_LIMITS,
                received_at=RECEIVED,
                sent_at=None,
            )
        except InvalidInputError:
            continue
        rows.append(row.as_tuple(source_id))
    with log.engine.begin() as conn:
        append(conn, rows)
    return len(rows)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(_messages(), min_size=1, max_size=12), min_size=1, max_size=3))
def test_every_accepted_event_is_processed_and_read_back(
    log: Log, client: TestClient, admin_headers: dict[str, str], batches: list[Any]
) -> None:
    for messages in batches:
        sent = _accepted(log, messages)
        # Small batches, then the rest (the app's embedded processor may take turns too).
        profiles.process_batch(log.engine, log.settings, limit=7)
        log.process()
        assert profiles.lag(log.engine).events == 0, sent
    for pid in log.live_profiles():
        for tail in ("", "/events", "/consent", "/segments"):
            answer = client.get(f"/v1/profiles/{pid}{tail}", headers=admin_headers)
            assert answer.status_code == 200, (tail, answer.text)
    assert client.get("/v1/identity/conflicts", headers=admin_headers).status_code == 200
    incremental = snapshot(log.engine)
    profiles.rebuild(log.engine, log.settings)
    assert snapshot(log.engine) == incremental

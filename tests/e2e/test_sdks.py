"""The official Python SDKs against a live server: every call type arrives intact."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from closedloop import ingest
from tests.conftest import LiveServer
from tests.helpers import stored

pytestmark = pytest.mark.e2e


def _send_all(client: Any) -> dict[str, str]:
    """Send one call of each type; return type -> messageId."""
    created = datetime(2015, 2, 23, 22, 28, 55, 111000, tzinfo=UTC)
    ids: dict[str, str] = {}
    _ok, msg = client.identify(
        "user-123",
        {
            "email": "peter@example.com",
            "firstName": "Peter",
            "lastName": "Gibbons",
            "gender": "male",
            "postalCode": "01067",
            "createdAt": created,
        },
        anonymous_id="anon-1",
    )
    ids["identify"] = msg["messageId"]
    _ok, msg = client.track(
        "user-123", "Article Rated", {"rating": 4, "article": "laufen-im-winter"}
    )
    ids["track"] = msg["messageId"]
    _ok, msg = client.page("user-123", name="Kündigung", properties={"path": "/account/kuendigung"})
    ids["page"] = msg["messageId"]
    _ok, msg = client.screen("user-123", name="Home", properties={"tab": "start"})
    ids["screen"] = msg["messageId"]
    _ok, msg = client.group("user-123", "company-9", {"name": "ACME GmbH"})
    ids["group"] = msg["messageId"]
    _ok, msg = client.alias("anon-1", "user-123")
    ids["alias"] = msg["messageId"]
    client.flush()
    return ids


def _check(engine: Engine, ids: dict[str, str]) -> None:
    rows = {r["message_id"]: r for r in stored(engine)}
    assert set(rows) == set(ids.values())
    identify = rows[ids["identify"]]
    assert identify["type"] == "identify"
    assert identify["user_id"] == "user-123"
    assert identify["anonymous_id"] == "anon-1"
    traits = identify["payload"]["traits"]
    assert traits["postalCode"] == "01067"
    assert traits["email"] == "peter@example.com"
    assert traits["createdAt"].startswith("2015-02-23T22:28:55.111")
    track = rows[ids["track"]]
    assert track["event"] == "Article Rated"
    assert track["payload"]["properties"] == {"rating": 4, "article": "laufen-im-winter"}
    page = rows[ids["page"]]
    assert page["event"] == "Kündigung"
    assert page["payload"]["properties"]["path"] == "/account/kuendigung"
    assert rows[ids["screen"]]["payload"]["properties"] == {"tab": "start"}
    assert rows[ids["group"]]["payload"]["groupId"] == "company-9"
    assert rows[ids["group"]]["payload"]["traits"] == {"name": "ACME GmbH"}
    alias = rows[ids["alias"]]
    assert alias["payload"]["previousId"] == "anon-1"
    assert alias["user_id"] == "user-123"
    for row in rows.values():
        assert row["original_timestamp"] is not None
        assert row["sent_at"] is not None


def test_segment_analytics_python_delivers_every_call(
    live_server: LiveServer, engine: Engine, source: ingest.NewSourceKey
) -> None:
    from segment.analytics import Client

    errors: list[Any] = []
    client = Client(
        source.write_key,
        host=live_server.url,
        gzip=True,
        on_error=lambda e, b: errors.append(e),
        upload_interval=0.05,
    )
    ids = _send_all(client)
    assert errors == []
    _check(engine, ids)


def test_rudder_sdk_python_delivers_every_call(
    live_server: LiveServer, engine: Engine, source: ingest.NewSourceKey
) -> None:
    from rudderstack.analytics import Client

    errors: list[Any] = []
    client = Client(
        source.write_key,
        host=live_server.url,
        gzip=True,
        on_error=lambda e, b: errors.append(e),
        upload_interval=0.05,
    )
    ids = _send_all(client)
    assert errors == []
    _check(engine, ids)
    rows = stored(engine)
    assert all(r["payload"]["channel"] == "server" for r in rows)
    identify = next(r for r in rows if r["type"] == "identify")
    assert identify["payload"]["context"]["traits"]["email"] == "peter@example.com"

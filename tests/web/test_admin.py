from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.ingest._tables import sources
from tests.helpers import basic, track


def test_sources_api_adds_lists_disables_and_rotates(
    client: TestClient, engine: Engine, admin_headers: dict[str, str]
) -> None:
    made = client.post(
        "/v1/sources", json={"name": "callcenter", "kind": "callcenter"}, headers=admin_headers
    )
    assert made.status_code == 201
    key = made.json()["write_key"]
    assert key.startswith("wk_") and len(key) > 40
    listed = client.get("/v1/sources", headers=admin_headers).json()
    assert [s["name"] for s in listed] == ["callcenter"]
    assert key not in str(listed)
    assert listed[0]["key_hint"] == key[:7]
    with engine.connect() as conn:
        dump = str(conn.execute(sources.select()).all())
    assert key not in dump  # only the hash is kept
    assert (
        client.patch(
            "/v1/sources/callcenter", json={"enabled": False}, headers=admin_headers
        ).json()["enabled"]
        is False
    )
    rotated = client.post("/v1/sources/callcenter/rotate", headers=admin_headers).json()[
        "write_key"
    ]
    assert rotated != key


def test_sources_api_names_bad_input(client: TestClient, admin_headers: dict[str, str]) -> None:
    bad_kind = client.post("/v1/sources", json={"name": "x", "kind": "fax"}, headers=admin_headers)
    assert bad_kind.status_code == 400
    assert bad_kind.json()["error"]["field"] == "kind"
    bad_name = client.post(
        "/v1/sources", json={"name": "Bad Name!", "kind": "web"}, headers=admin_headers
    )
    assert bad_name.status_code == 400
    assert bad_name.json()["error"]["field"] == "name"
    missing = client.post("/v1/sources", json={"name": "x"}, headers=admin_headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "kind"
    client.post("/v1/sources", json={"name": "web", "kind": "web"}, headers=admin_headers)
    again = client.post("/v1/sources", json={"name": "web", "kind": "web"}, headers=admin_headers)
    assert again.status_code == 409
    assert client.get("/v1/sources/nope", headers=admin_headers).status_code == 404
    assert client.post("/v1/sources/nope/rotate", headers=admin_headers).status_code == 404


def test_admin_routes_need_the_admin_token(client: TestClient) -> None:
    assert client.get("/v1/sources").status_code == 401
    assert client.get("/v1/sources", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/v1/events", headers={"Authorization": "Token abc"})
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]["message"]


def test_events_api_filters_and_pages(
    client: TestClient, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    batch = [track(userId="u1", event=f"E{i}") for i in range(5)]
    batch += [
        {"type": "page", "anonymousId": "a1", "name": "Home", "timestamp": "2026-01-01T00:00:00Z"}
    ]
    client.post("/v1/batch", json={"batch": batch}, headers=basic(source.write_key))
    page1 = client.get(
        "/v1/events", params={"user_id": "u1", "limit": 3}, headers=admin_headers
    ).json()
    assert [e["event"] for e in page1["items"]] == ["E4", "E3", "E2"]
    page2 = client.get(
        "/v1/events",
        params={"user_id": "u1", "limit": 3, "cursor": page1["next_cursor"]},
        headers=admin_headers,
    ).json()
    assert [e["event"] for e in page2["items"]] == ["E1", "E0"]
    assert page2["next_cursor"] is None
    pages = client.get("/v1/events", params={"type": "page"}, headers=admin_headers).json()["items"]
    assert [e["anonymous_id"] for e in pages] == ["a1"]
    recent = client.get(
        "/v1/events", params={"since": "2026-06-01T00:00:00Z"}, headers=admin_headers
    ).json()
    assert len(recent["items"]) == 5
    one = client.get(
        "/v1/events", params={"event": "E2", "source": "shop-web"}, headers=admin_headers
    ).json()
    assert one["items"][0]["payload"]["properties"] == {"rating": 4}


def test_events_api_names_bad_parameters(client: TestClient, admin_headers: dict[str, str]) -> None:
    cases = {
        "cursor": {"cursor": "abc"},
        "since": {"since": "yesterday"},
        "limit": {"limit": "5000"},
        "type": {"type": "delete"},
    }
    for field, params in cases.items():
        response = client.get("/v1/events", params=params, headers=admin_headers)
        assert response.status_code == 400, field
        assert response.json()["error"]["field"] == field


def test_failed_events_api_lists_rejections(
    client: TestClient, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    client.post(
        "/v1/batch", json={"batch": [track(event=None), track()]}, headers=basic(source.write_key)
    )
    items = client.get("/v1/failed-events", headers=admin_headers).json()["items"]
    assert len(items) == 1
    assert items[0]["source"] == "shop-web"
    assert items[0]["field"] == "event"
    assert items[0]["origin"] == "http:/v1/batch[0]"


def test_healthz_and_metrics(client: TestClient, source: ingest.NewSourceKey) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["database"] == "ok"
    client.post(
        "/v1/batch", json={"batch": [track(), track(event=None)]}, headers=basic(source.write_key)
    )
    client.post(
        "/v1/track", json=track(), headers={**basic(source.write_key), "X-Retry-Count": "2"}
    )
    client.post("/v1/track", json=track(), headers=basic("wk_unknown-key-000"))
    text = client.get("/metrics").text
    assert 'closedloop_events_accepted_total{source="shop-web"} 2.0' in text
    assert 'closedloop_events_failed_total{reason="missing_field",source="shop-web"} 1.0' in text
    assert "closedloop_tracking_client_retries_total 1.0" in text
    assert 'closedloop_tracking_requests_rejected_total{status="401"} 1.0' in text
    assert "closedloop_commit_seconds_bucket" in text
    assert "closedloop_write_queue_events 0.0" in text


def test_openapi_describes_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/track",
        "/v1/batch",
        "/v1/sources",
        "/v1/events",
        "/v1/failed-events",
        "/healthz",
    ):
        assert path in paths

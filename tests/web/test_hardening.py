"""Hardening: security headers and CSP on every answer, CORS on tracking only and without
credentials, a write key reads nothing, rate limits per source (429 + Retry-After), admin
tokens kept hashed (both backends)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from closedloop import access, ingest
from closedloop.cli import app as cli_app
from closedloop.web import create_app
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.helpers import basic, stored, track
from tests.privacy.test_erasure import _dump


def test_headers_csp_and_cors(
    client: TestClient, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    for path, headers in (
        ("/healthz", {}),
        ("/v1/sources", admin_headers),
        ("/v1/sources", {}),  # a 401 too
        ("/s/not-a-token", {}),
        ("/docs", {}),
        ("/openapi.json", {}),
    ):
        answer = client.get(path, headers=headers)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp, path
        assert "access-control-allow-origin" not in answer.headers, path
    assert client.get("/v1/sources", headers=admin_headers).headers["cache-control"] == "no-store"
    page = client.get("/s/not-a-token")
    assert "form-action 'self'" in page.headers["content-security-policy"]

    preflight = client.options(
        "/v1/batch",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in preflight.headers
    posted = client.post(
        "/v1/track",
        json=track(),
        headers={**basic(source.write_key), "Origin": "https://x.example"},
    )
    assert posted.status_code == 200
    assert posted.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in posted.headers
    management = client.options(
        "/v1/sources",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in management.headers


def test_a_write_key_reads_nothing(client: TestClient, source: ingest.NewSourceKey) -> None:
    spec = client.get("/openapi.json").json()
    tried = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/") or path.split("/")[2] in (
            "identify",
            "track",
            "page",
            "screen",
            "group",
            "alias",
            "batch",
            "import",
        ):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in operations:
            for headers in (
                basic(source.write_key),
                {"Authorization": f"Bearer {source.write_key}"},
            ):
                answer = client.request(method.upper(), concrete, headers=headers, json={})
                assert answer.status_code == 401, (method, path, answer.status_code)
                tried += 1
    assert tried >= 40


def test_rate_limit_per_source(engine: Engine, db_url: str) -> None:
    settings = make_settings(db_url, rate_limit_events_per_second=5, rate_limit_burst=20)
    shop = ingest.add_source(engine, "shop", kind="web")
    pos = ingest.add_source(engine, "pos", kind="pos")
    with TestClient(create_app(settings, engine=engine)) as client:
        first = client.post(
            "/v1/batch", json={"batch": [track() for _ in range(15)]}, headers=basic(shop.write_key)
        )
        assert first.status_code == 200
        second = client.post(
            "/v1/batch", json={"batch": [track() for _ in range(15)]}, headers=basic(shop.write_key)
        )
        assert second.status_code == 429
        assert 1 <= int(second.headers["retry-after"]) <= 3
        assert second.json()["error"]["code"] == "rate_limited"
        other = client.post(
            "/v1/batch", json={"batch": [track() for _ in range(15)]}, headers=basic(pos.write_key)
        )
        assert other.status_code == 200  # each source has its own budget
        huge = client.post(  # larger than the burst: passes on a full bucket, not for ever 429
            "/v1/batch", json={"batch": [track() for _ in range(30)]}, headers=basic(pos.write_key)
        )
        assert huge.status_code == 429
    assert len(stored(engine)) == 30  # nothing of the refused requests


def test_admin_tokens_are_kept_hashed(engine: Engine, db_url: str) -> None:
    settings = make_settings(db_url).model_copy(update={"admin_token": None})
    env = {"CLOSEDLOOP_DATABASE_URL": db_url, "CLOSEDLOOP_SECRET_KEY": "s" * 32}
    made = CliRunner().invoke(cli_app, ["tokens", "add", "crm-sync", "--json"], env=env)
    assert made.exit_code == 0, made.output
    token = made.output.strip().split('"token": "')[1].split('"')[0]
    assert token.startswith("clat_") and len(token) > 40
    assert token not in str(_dump(engine))
    with TestClient(create_app(settings, engine=engine)) as client:
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/sources", headers=auth).status_code == 200
        assert (
            client.get(
                "/v1/sources", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ).status_code
            == 401
        )
        assert (
            client.get("/v1/sources", headers={"Authorization": "Bearer clat_guess"}).status_code
            == 401
        )
    listed = CliRunner().invoke(cli_app, ["tokens", "list"], env=env)
    assert "crm-sync" in listed.output and token not in listed.output
    assert access.list_tokens(engine)[0].last_used_at is not None
    again = CliRunner().invoke(cli_app, ["tokens", "add", "crm-sync"], env=env)
    assert again.exit_code == 1 and "exists" in again.output
    bad = CliRunner().invoke(cli_app, ["tokens", "add", "Bad Name"], env=env)
    assert bad.exit_code == 1 and "invalid token name" in bad.output
    assert CliRunner().invoke(cli_app, ["tokens", "revoke", "crm-sync"], env=env).exit_code == 0
    assert not access.TokenChecker(engine, cache_seconds=0).valid(token)
    with TestClient(create_app(settings, engine=engine)) as client:
        assert (
            client.get("/v1/sources", headers={"Authorization": f"Bearer {token}"}).status_code
            == 401
        )


def test_write_key_in_no_row(engine: Engine, tmp_path: Path) -> None:
    made = ingest.add_source(engine, "shop", kind="web")
    with engine.connect() as conn:
        rows = str(conn.execute(sa.text("SELECT * FROM sources")).all())
    assert made.write_key not in rows and made.write_key not in str(_dump(engine))


def test_nul_in_a_query_is_refused_by_name(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    answer = client.get("/v1/events?user_id=a%00b", headers=admin_headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "user_id"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert client.get("/v1/events?user_id=a%2500b", headers=admin_headers).status_code == 200


def test_a_locked_store_is_503_not_500(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from closedloop import feeds

    def locked(*_args: object, **_kwargs: object) -> None:
        raise sa.exc.OperationalError("INSERT ...", {}, Exception("database is locked"))

    monkeypatch.setattr(feeds, "list_feeds", locked)
    answer = client.get("/v1/feeds", headers=admin_headers)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "2"
    assert "database is locked" not in answer.text


@pytest.mark.parametrize(
    "cursor", ["\u00b2", "1\u00b2", "\u0661\u0662", "-1", "1e3", " 1", str(2**63), "9" * 19]
)
@pytest.mark.parametrize(
    "path", ["/v1/events", "/v1/failed-events", "/v1/profiles/p_unknown/events"]
)
def test_a_cursor_that_is_not_ascii_digits_is_refused_by_name(
    client: TestClient, admin_headers: dict[str, str], path: str, cursor: str
) -> None:
    """`str.isdigit` holds for `²` (which `int` refuses) and for Arabic-Indic digits, and
    a store's ids end at 2**63 - 1 (a larger one overflowed the driver): a cursor is the
    ASCII digits of a `next_cursor`, anything else a 400 naming it."""
    answer = client.get(path, params={"cursor": cursor}, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "cursor"


@pytest.mark.parametrize("score", ["\u00b2", "\u0661", "1\u00b2", "\uff11"])
def test_a_survey_score_that_is_not_ascii_digits_is_refused(client: TestClient, score: str) -> None:
    """The answer form's score, sent by anyone holding a link (or not): never a 500."""
    answer = client.post("/s/not-a-token", data={"score": score})
    assert answer.status_code == 400
    assert "0" in answer.text and "10" in answer.text  # "choose a score from 0 to 10"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/v1/sources", {"name": "shop\n", "kind": "web"}, "name"),
        ("post", "/v1/segments", {"name": "vip\n", "condition": "mood is negative"}, "name"),
        ("post", "/v1/surveys", {"name": "nps\n"}, "name"),
        ("get", "/v1/profiles?customer_key=v1." + "a" * 64 + "%0A", None, "customer_key"),
    ],
)
def test_a_line_break_after_a_valid_name_is_refused_by_name(
    client: TestClient,
    admin_headers: dict[str, str],
    method: str,
    path: str,
    body: dict[str, str] | None,
    field: str,
) -> None:
    """Names and keys are checked whole: a regex's `$` alone also matches before a final
    line break, which would have let `shop\\n` through as a name."""
    if method == "post":
        answer = client.post(path, json=body, headers=admin_headers)
    else:
        answer = client.get(path, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


def test_an_id_past_the_stores_range_is_refused_by_name(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    top = str(2**63 - 1)
    assert (
        client.get("/v1/events", params={"cursor": top}, headers=admin_headers).status_code == 200
    )
    audit = client.get("/v1/privacy/audit", params={"before": top}, headers=admin_headers)
    assert audit.status_code == 200
    past = client.get("/v1/privacy/audit", params={"before": str(2**63)}, headers=admin_headers)
    assert past.status_code == 400
    assert past.json()["error"]["field"] == "before"

"""Feeds through the HTTP API and the CLI, and every bad definition answered with its field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.web import create_app
from tests.feeds.conftest import Shop, gold_feed


@pytest.fixture
def feed_client(shop: Shop, engine: Engine) -> Any:
    from closedloop.config import FeedSettings

    settings = shop.settings.model_copy(
        update={"feeds": FeedSettings(**{**shop.settings.feeds.model_dump(), "poll_seconds": 0.05})}
    )
    with TestClient(create_app(settings, engine=engine)) as client:
        yield client


def test_create_read_change_run_and_delete(
    feed_client: TestClient, shop: Shop, admin_headers: dict[str, str]
) -> None:
    shop.customer(1)
    shop.customer(2, consent=False)
    created = feed_client.post("/v1/feeds", json=gold_feed(), headers=admin_headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "gold" and body["mode"] == "full" and body["purpose"] == "crm_sync"
    assert body["schedule"] == {"cron": "0 2 * * *", "timezone": "Europe/Berlin"}
    again = feed_client.post("/v1/feeds", json=gold_feed(), headers=admin_headers)
    assert again.status_code == 409
    names = [f["name"] for f in feed_client.get("/v1/feeds", headers=admin_headers).json()["items"]]
    assert names == ["crm-masterdata", "gold", "mood-keys"]
    preview = feed_client.get("/v1/feeds/gold/preview?rows=5", headers=admin_headers).json()
    assert preview["columns"][:2] == ["customer_key", "salutation"]
    assert len(preview["rows"]) == 1 and preview["stats"]["skipped_no_consent"] == 1, preview

    changed = feed_client.put(
        "/v1/feeds/gold", json=gold_feed(mode="delta", name="ignored"), headers=admin_headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["mode"] == "delta" and changed.json()["name"] == "gold"

    queued = feed_client.post("/v1/feeds/gold/runs", headers=admin_headers)
    assert queued.status_code == 202
    run_id = queued.json()["id"]
    assert queued.headers["location"] == f"/v1/feeds/gold/runs/{run_id}"
    from tests.conftest import wait_for

    def done() -> bool:
        state = feed_client.get(f"/v1/feeds/gold/runs/{run_id}", headers=admin_headers).json()
        return bool(state["state"] == "succeeded")

    wait_for(done)  # the server's scheduler ran it
    runs = feed_client.get("/v1/feeds/gold/runs", headers=admin_headers).json()["items"]
    assert [r["id"] for r in runs] == [run_id]
    run = runs[0]
    assert run["rows"] == 1 and run["bytes"] > 0 and len(run["checksum"]) == 64
    assert run["duration_seconds"] >= 0 and run["file_name"].startswith("gold-")
    assert run["stats"]["entered"] == 1
    assert (
        feed_client.get("/v1/feeds/gold", headers=admin_headers).json()["last_run"]["id"] == run_id
    )

    assert feed_client.delete("/v1/feeds/gold", headers=admin_headers).status_code == 204
    assert feed_client.get("/v1/feeds/gold", headers=admin_headers).status_code == 404
    assert feed_client.get("/v1/feeds/gold/runs", headers=admin_headers).status_code == 404
    assert feed_client.post("/v1/feeds/gold/runs", headers=admin_headers).status_code == 404


def test_feeds_need_the_admin_token(feed_client: TestClient) -> None:
    assert feed_client.get("/v1/feeds").status_code == 401
    assert feed_client.post("/v1/feeds", json=gold_feed()).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert feed_client.post("/v1/feeds/mood-keys/runs", headers=wrong).status_code == 401


_BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"name": "Bad Name"}, "name", "lower-case"),
    ({"columns": []}, "columns", "at least 1"),
    ({"columns": [{"name": "x", "source": "password"}]}, "columns[0].source", "unknown source"),
    ({"columns": [{"name": "x", "source": "trait.a", "value": "b"}]}, "columns[0]", "either"),
    (
        {"columns": [{"name": "x", "source": "customer_key", "transforms": ["exec"]}]},
        "columns[0].transforms",
        "unknown transform",
    ),
    (
        {"columns": [{"name": "x", "source": "created_at", "transforms": [{"date": "%s%n"}]}]},
        "columns[0].transforms",
        "only %d",
    ),
    (
        {"columns": [{"name": "x", "source": "customer_key", "transforms": [{"max_length": 0}]}]},
        "columns[0].transforms",
        "whole number",
    ),
    ({"columns": [{"name": "a\nb", "source": "customer_key"}]}, "columns[0].name", "control"),
    (
        {
            "columns": [
                {"name": "a", "source": "customer_key"},
                {"name": "a", "source": "profile_id"},
            ]
        },
        "feed",
        "same name",
    ),
    (
        {"mode": "delta", "columns": [{"name": "a", "source": "profile_id"}]},
        "feed",
        "exports its key",
    ),
    ({"mode": "sometimes"}, "mode", "full"),
    ({"format": {"type": "xlsx"}}, "format", "does not match"),
    ({"format": {"type": "csv", "delimiter": '"'}}, "format.csv.delimiter", "not a quote"),
    ({"format": {"type": "csv", "encoding": "latin-9"}}, "format.csv.encoding", "utf-8"),
    ({"file_name": "../../etc/passwd"}, "file_name", "letters, digits"),
    ({"file_name": "{date:%s}"}, "file_name", "not allowed"),
    ({"file_name": "{__class__}"}, "file_name", "letters, digits"),
    ({"schedule": {"cron": "every day"}}, "schedule.cron", "five-field"),
    (
        {"schedule": {"cron": "0 2 * * *", "timezone": "Mars/Olympus"}},
        "schedule.timezone",
        "unknown time zone",
    ),
    (
        {"destination": {"type": "local", "path": "../outside"}},
        "destination.local.path",
        "without `..`",
    ),
    (
        {
            "destination": {
                "type": "ftps",
                "host": "x.example",
                "user": "u",
                "password_secret": "p",
                "fingerprint": "zz",
            }
        },
        "destination.ftps.fingerprint",
        "SHA-256",
    ),
    (
        {
            "destination": {
                "type": "ftps",
                "host": "x.example",
                "user": "u",
                "password": "hunter2",
                "password_secret": "p",
            }
        },
        "destination.ftps.password",
        "Extra inputs",
    ),
    (
        {"destination": {"type": "sftp", "host": "x.example", "user": "u", "password_secret": "p"}},
        "destination.sftp",
        "known_hosts",
    ),
    (
        {"destination": {"type": "webhook", "url": "file:///etc/passwd", "signing_secret": "k"}},
        "destination.webhook.url",
        "https://",
    ),
    *(
        (
            {"destination": {"type": "webhook", "url": url, "signing_secret": "k"}},
            "destination.webhook.url",
            "https://",
        )
        for url in ("https://crm.example:\u0661\u0662/in", "https://crm.example/in\n")
    ),
    # A line break after a valid value (a regex's `$` alone allows one at the end).
    ({"name": "gold\n"}, "name", ""),
    ({"file_name": "gold.csv\n"}, "file_name", ""),
    ({"destination": {"type": "local", "path": "crm\n"}}, "destination.local.path", ""),
    (
        {"destination": {"type": "sftp", "host": "x.example\n", "user": "u", "known_hosts": "k"}},
        "destination.sftp.host",
        "",
    ),
    ({"destination": {"type": "gopher"}}, "destination", "does not match"),
    ({"source": {"segments": ["positive", "positive"]}}, "source.segments", "twice"),
    ({"source": {"segments": ["nope"]}}, "source.segments[0]", "no segment"),
    ({"source": {"condition": "mood is"}}, "source.condition", "ends too early"),
    ({"source": {"condition": "trait x = 1' OR 1=1--"}}, "source.condition", ""),
    (
        {"columns": [{"name": f"c{i}", "source": "customer_key"} for i in range(201)]},
        "columns",
        "at most 200",
    ),
    ({"description": "x" * 501}, "description", "at most 500"),
]


@pytest.mark.parametrize(("change", "field", "words"), _BAD)
def test_bad_definitions_name_the_field(
    change: dict[str, Any],
    field: str,
    words: str,
    feed_client: TestClient,
    admin_headers: dict[str, str],
) -> None:
    answer = feed_client.post("/v1/feeds", json={**gold_feed(), **change}, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == field, error
    assert words in error["message"], error
    assert feed_client.get("/v1/feeds/gold", headers=admin_headers).status_code == 404


def test_hostile_bodies(feed_client: TestClient, admin_headers: dict[str, str]) -> None:
    for body in ([1, 2], "text", {"name": "x" * 10_000}):
        answer = feed_client.post("/v1/feeds", json=body, headers=admin_headers)
        assert answer.status_code in (400, 422), answer.text
        assert answer.status_code != 500
    nested: Any = {}
    for _ in range(60):
        nested = {"and": [nested]}
    answer = feed_client.post(
        "/v1/feeds", json={**gold_feed(), "source": {"condition": nested}}, headers=admin_headers
    )
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "source.condition"


def test_feeds_cli(
    shop: Shop, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop.customer(1)
    shop.customer(2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    definition = tmp_path / "gold.yaml"
    definition.write_text(
        """
kind: feed
name: gold
source:
  condition: trait plan = "gold"
mode: delta
columns:
  - {name: kundennummer, source: customer_key}
  - {name: anrede, source: masterdata.gender, transforms: [salutation]}
  - {name: plz, source: masterdata.postal_code}
format: {type: csv, delimiter: ";", encoding: utf-8-sig}
file_name: "gold-{date:%Y%m%d}"
destination: {type: local, path: crm}
""",
        encoding="utf-8",
    )
    dry = runner.invoke(app, ["apply", str(definition), "--dry-run"])
    assert dry.exit_code == 0 and "valid (not stored)" in dry.output
    applied = runner.invoke(app, ["apply", str(definition)])
    assert applied.exit_code == 0, applied.output
    assert "feed `gold` created" in applied.output
    assert "changed" in runner.invoke(app, ["apply", str(definition)]).output
    listed = runner.invoke(app, ["feeds", "list"])
    assert "gold" in listed.output and "0 2 * * * Europe/Berlin" in listed.output
    shown = json.loads(runner.invoke(app, ["feeds", "show", "gold"]).output)
    assert shown["columns"][1]["transforms"] == [{"salutation": "de"}]
    preview = runner.invoke(app, ["feeds", "preview", "gold", "--json"])
    assert json.loads(preview.output)["rows"][0][1:] == ["Frau", "01067"]
    ran = runner.invoke(app, ["feeds", "run", "gold"])
    assert ran.exit_code == 0, ran.output
    assert "2 rows" in ran.output
    exported = list((tmp_path / "exports" / "crm").glob("gold-*.csv"))
    assert len(exported) == 1
    assert (
        exported[0].read_text(encoding="utf-8-sig").splitlines()[0]
        == "action;kundennummer;anrede;plz"
    )
    runs = json.loads(runner.invoke(app, ["feeds", "runs", "gold", "--json"]).output)["items"]
    assert runs[0]["state"] == "succeeded" and runs[0]["rows"] == 2
    assert "succeeded" in runner.invoke(app, ["feeds", "runs", "gold"]).output
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: feed\nname: bad\ncolumns: [{name: x, source: secret}]\n")
    failed = runner.invoke(app, ["apply", str(bad)])
    assert failed.exit_code == 1 and "columns[0].source" in failed.output
    assert runner.invoke(app, ["feeds", "run", "nope"]).exit_code == 1
    assert runner.invoke(app, ["feeds", "delete", "gold"]).exit_code == 1  # needs --yes
    assert runner.invoke(app, ["feeds", "delete", "gold", "--yes"]).exit_code == 0


def test_feed_health_in_metrics(feed_client: TestClient, shop: Shop) -> None:
    from closedloop import feeds

    shop.customer(1)
    feeds.save_feed(shop.log.engine, gold_feed(), create=True)
    assert feeds.run_now(shop.log.engine, shop.settings, "gold").state == "succeeded"
    broken = gold_feed(
        destination={"type": "webhook", "url": "https://10.9.9.9/x", "signing_secret": "hook"}
    )
    feeds.save_feed(shop.log.engine, broken | {"name": "broken"}, create=True)
    assert feeds.run_now(shop.log.engine, shop.settings, "broken").state == "failed"
    text = feed_client.get("/metrics").text
    assert 'closedloop_feed_failing{feed="broken"} 1.0' in text
    assert 'closedloop_feed_failing{feed="gold"} 0.0' in text
    assert 'closedloop_feed_last_success_timestamp_seconds{feed="gold"}' in text
    assert 'closedloop_feed_last_success_timestamp_seconds{feed="broken"}' not in text


def test_worker_runs_queued_and_due_feeds(
    shop: Shop, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from closedloop import feeds

    shop.customer(1)
    feeds.save_feed(shop.log.engine, gold_feed(), create=True)
    queued = feeds.queue_run(shop.log.engine, "gold")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    result = CliRunner().invoke(app, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert f"feed `gold` run {queued.id} succeeded, 1 rows" in result.output
    assert feeds.get_run(shop.log.engine, "gold", queued.id).state == "succeeded"
    assert (tmp_path / "exports" / "crm").is_dir()

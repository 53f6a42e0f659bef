"""Segments through the HTTP API and the CLI: preview, list, members, a profile's segments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from closedloop import ingest, segments
from closedloop.cli import app
from tests.profiles.conftest import Log
from tests.segments.test_sql import _shop


def test_preview_list_members_and_explanation(
    client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    _shop(client, source, log)
    answer = client.post(
        "/v1/segments/preview",
        json={"condition": "mood is negative or churn risk"},
        headers=admin_headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == 2
    assert body["tree"] == {"or": [{"mood": "negative"}, {"churn_risk": True}]}
    tree = client.post(
        "/v1/segments/preview", json={"condition": {"consent": "surveys"}}, headers=admin_headers
    ).json()
    assert tree["count"] == 1 and tree["condition"] == "consent surveys"

    segments.refresh(log.engine, log.settings)
    listed = {
        s["name"]: s for s in client.get("/v1/segments", headers=admin_headers).json()["items"]
    }
    assert set(listed) == {"positive", "negative", "churn-risk", "promoters", "detractors"}
    assert listed["promoters"]["size"] == 1
    members = client.get("/v1/segments/promoters/members", headers=admin_headers).json()
    anna = log.profile_of("user_id", "anna")
    assert [m["id"] for m in members["items"]] == [anna]
    assert members["items"][0]["customer_key"].startswith("v1.")
    assert client.get("/v1/segments/nope/members", headers=admin_headers).status_code == 404

    why = client.get(f"/v1/profiles/{anna}/segments", headers=admin_headers).json()["items"]
    promoters = next(s for s in why if s["segment"] == "promoters")
    assert promoters["matched"] is True
    assert promoters["value"]["score"] == 10
    positive = next(s for s in why if s["segment"] == "positive")
    assert positive["matched"] is True and positive["value"] > 0.2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"condition": "mood is"}, "ends too early"),
        ({"condition": "trait x ~ 1"}, "line 1, column 9"),
        ({"condition": {"eval": "1"}}, "unknown condition"),
        ({"condition": 42}, "as text"),
        ({}, "as text"),
        ({"condition": "in segment nope"}, "no segment `nope`"),
        ({"condition": "script::Runtime.getRuntime().exec('id')"}, "line 1"),
    ],
)
def test_bad_previews_are_400_with_the_position(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, Any], message: str
) -> None:
    answer = client.post("/v1/segments/preview", json=body, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]["message"]
    assert answer.json()["error"]["field"] == "condition"


def test_segments_cli(
    client: TestClient,
    source: ingest.NewSourceKey,
    log: Log,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _shop(client, source, log)
    segments.refresh(log.engine, log.settings)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    listed = runner.invoke(app, ["segments", "list"])
    assert listed.exit_code == 0, listed.output
    assert "promoters" in listed.output and "latest nps >= 9 within 90 days" in listed.output
    shown = runner.invoke(app, ["segments", "preview", "trait plan is present"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("2 profiles: trait plan is present")
    tree = runner.invoke(app, ["segments", "preview", "--json-tree", '{"mood": "positive"}'])
    assert "2 profiles: mood is positive" in tree.output
    members = runner.invoke(app, ["segments", "members", "promoters"])
    assert [json.loads(line)["id"] for line in members.output.splitlines()] == [
        log.profile_of("user_id", "anna")
    ]
    bad = runner.invoke(app, ["segments", "preview", "mood is"])
    assert bad.exit_code == 1 and "ends too early" in bad.output
    assert runner.invoke(app, ["segments", "members", "nope"]).exit_code == 1

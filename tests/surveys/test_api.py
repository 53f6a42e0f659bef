"""Surveys through the HTTP API and the CLI; bad definitions answered with their field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from closedloop.cli import app
from tests.profiles.conftest import Log, identify


def test_crud_stats_and_eligibility(
    client: TestClient, admin_headers: dict[str, str], log: Log
) -> None:
    body = {"name": "nps", "min_delay_days": 3, "max_delay_days": 14}
    created = client.post("/v1/surveys", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    assert created.json()["interval_weeks"] == 26 and created.json()["purpose"] == "surveys"
    assert client.post("/v1/surveys", json=body, headers=admin_headers).status_code == 409
    changed = client.put(
        "/v1/surveys/nps", json={**body, "sample_percent": 50}, headers=admin_headers
    )
    assert changed.status_code == 200 and changed.json()["sample_percent"] == 50
    assert [
        s["name"] for s in client.get("/v1/surveys", headers=admin_headers).json()["items"]
    ] == ["nps"]
    stats = client.get("/v1/surveys/nps/stats", headers=admin_headers).json()
    assert stats["n"] == 0 and stats["nps"] is None and stats["distribution"]["10"] == 0
    log.send(identify("u-1", email="a@example.de"))
    log.process()
    pid = log.profile_of("user_id", "u-1")
    answer = client.get(f"/v1/surveys/nps/eligibility?profile={pid}", headers=admin_headers)
    assert answer.status_code == 200 and answer.json()["profile"] == pid
    assert (
        client.get("/v1/surveys/nps/eligibility?profile=nobody", headers=admin_headers).status_code
        == 404
    )
    assert client.get("/v1/surveys/nps/stats").status_code == 401
    assert client.delete("/v1/surveys/nps", headers=admin_headers).status_code == 204
    assert client.get("/v1/surveys/nps", headers=admin_headers).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "min_delay_days": "soon"}, "min_delay_days"),
        ({"name": "x", "window": {"days": ["someday"]}}, "window.days"),
        ({"name": "x", "sender": "<script>"}, "sender"),
        ({"name": "x", "question": {"de": ""}}, "question.de"),
        ({"name": "x", "trigger": "segment_entry", "segment": "nope"}, "segment"),
        ({"name": "x", "audience": "mood is"}, "audience"),
        ({"min_delay_days": 1}, "name"),
    ],
)
def test_bad_surveys_name_the_field(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    answer = client.post("/v1/surveys", json=body, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


def test_surveys_cli(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: Log
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    monkeypatch.setenv("CLOSEDLOOP_SECRET_KEY", "test-secret-" + "y" * 20)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    document = tmp_path / "nps.yaml"
    document.write_text(
        "kind: survey\nname: nps\nwindow: {start: '00:00', end: '23:59', "
        "days: [mon, tue, wed, thu, fri, sat, sun]}\n"
    )
    assert runner.invoke(app, ["apply", str(document)]).exit_code == 0
    listed = runner.invoke(app, ["surveys", "list"])
    assert "nps" in listed.output and "0-∞" in listed.output
    log.send(identify("u-1", email="a@example.de", consent={"surveys": True}))
    log.process()
    ran = runner.invoke(app, ["surveys", "run"])
    assert ran.exit_code == 0, ran.output
    assert "1 invitations queued, 1 mailed" in ran.output
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    stats = json.loads(runner.invoke(app, ["surveys", "stats", "nps", "--json"]).output)
    assert stats["sent"] == 1 and stats["answered"] == 0
    pid = log.profile_of("user_id", "u-1") or ""
    why = json.loads(runner.invoke(app, ["surveys", "eligibility", "nps", "--profile", pid]).output)
    assert why["decisions"][0]["invited"] is True
    assert runner.invoke(app, ["surveys", "stats", "nope"]).exit_code == 1

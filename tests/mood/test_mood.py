"""Mood: default rules, decay, thresholds, reasons, churn risk, merges, rules as data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from closedloop import mood
from closedloop.cli import app
from closedloop.config import MoodSettings
from closedloop.profiles.state import ProcessedEvent
from tests.profiles.conftest import Log, identify, track

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def _ev(kind: str, name: str | None = None, **payload: Any) -> ProcessedEvent:
    return ProcessedEvent(
        id=1,
        type=kind,
        name=name,
        timestamp=0,
        received_at=0,
        payload=payload,
        source="web",
        channel="web",
    )


def _signal(ev: ProcessedEvent) -> list[tuple[str, float]]:
    found = []
    for rule in mood.DEFAULT_RULES.rules:
        value = mood.signal_of(rule, ev)
        if value is not None:
            found.append((rule.name, round(value, 3)))
    return found


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (_ev("track", "NPS Answered", properties={"score": 0}), [("nps", -1.0)]),
        (_ev("track", "NPS Answered", properties={"score": 6}), [("nps", -0.4)]),
        (_ev("track", "NPS Answered", properties={"score": 7}), [("nps", 0.0)]),
        (_ev("track", "NPS Answered", properties={"score": 8}), [("nps", 0.0)]),
        (_ev("track", "NPS Answered", properties={"score": 9}), [("nps", 0.6)]),
        (_ev("track", "NPS Answered", properties={"score": 10}), [("nps", 1.0)]),
        (_ev("track", "NPS Answered", properties={"score": "ten"}), []),
        (_ev("track", "Article Rated", properties={"rating": 1}), [("article_rated", -0.4)]),
        (_ev("track", "Article Rated", properties={"rating": 3}), [("article_rated", 0.0)]),
        (_ev("track", "Article Rated", properties={"rating": 5}), [("article_rated", 0.4)]),
        (_ev("track", "Article Shared"), [("article_shared", 0.3)]),
        (_ev("track", "Newsletter Subscribed"), [("newsletter_subscribed", 0.2)]),
        (_ev("track", "Newsletter Unsubscribed"), [("newsletter_cancelled", -0.3)]),
        (_ev("page", properties={"path": "/account/vertrag"}), [("contract_term_page", -0.1)]),
        (
            _ev("page", properties={"path": "/account/vertrag/aendern"}),
            [("contract_change_page", -0.3)],
        ),
        (
            _ev("page", properties={"path": "/account/kuendigung/bestaetigen"}),
            [("cancellation_page", -0.7)],
        ),
        (
            _ev("screen", context={"page": {"path": "/account/kuendigung"}}),
            [("cancellation_page", -0.7)],
        ),
        (_ev("page", properties={"path": "/laufschuhe"}), []),
        (
            _ev("track", "Call Logged", properties={"reason": "complaint"}),
            [("callcenter_complaint", -0.5)],
        ),
        (_ev("track", "Call Logged", properties={"reason": "question"}), []),
        (
            _ev("track", "Social Mention", properties={"sentiment": "Positive"}),
            [("social_mention", 0.3)],
        ),
        (
            _ev("track", "Social Mention", properties={"sentiment": "negative"}),
            [("social_mention", -0.3)],
        ),
    ],
)
def test_default_rules_turn_events_into_signals(
    ev: ProcessedEvent, expected: list[tuple[str, float]]
) -> None:
    assert _signal(ev) == expected


def test_the_hook_matches_each_page_path_once_a_batch_with_the_same_signals(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processor's hook remembers which page rules a path matches (paths recur); what it
    remembers gives the rules' own answers, also when it is full and starts again."""
    from closedloop.mood import score
    from closedloop.profiles.state import ProfileState

    monkeypatch.setattr(score, "_PATHS_KEPT", 2)
    hook = score.MoodHook()
    with log.engine.connect() as conn:
        context = hook.prepare(conn, log.settings)
    paths = ["/account/kuendigung", "/ACCOUNT/Kuendigung/x", "/laufschuhe", "/account/vertrag"]
    events = [_ev("page", properties={"path": path}) for path in paths * 3]
    events.append(_ev("screen", context={"page": {"path": "/account/vertrag/aendern"}}))
    events.append(_ev("page", properties={"title": "no path"}))
    for ev in events:
        state = ProfileState(id="p", created_at=0, updated_at=0, created_event_id=1)
        changed = hook.on_event(context, state, ev)
        got = [(s[2], s[1]) for s in state.derived.get("mood", [])]
        assert got == _signal(ev)
        assert changed == bool(got)
    assert len(context[-1]) <= 2


def _at(days_ago: float) -> int:
    return int(
        (NOW - timedelta(days=days_ago) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6
    )


def test_signals_fade_with_the_half_life_and_the_score_is_clamped() -> None:
    rules = mood.RuleSet(version=0, rules=mood.DEFAULT_RULES)
    settings = MoodSettings()
    half = mood.describe({"mood": [[_at(90), 0.6, "nps", 7, 0]]}, settings, now=NOW, rules=rules)
    assert half.score == pytest.approx(0.3, abs=1e-3)
    assert half.label == "positive"
    old = mood.describe({"mood": [[_at(270), 0.6, "nps", 7, 0]]}, settings, now=NOW, rules=rules)
    assert old.score == pytest.approx(0.075, abs=1e-3)
    assert old.label == "neutral"
    many = [[_at(1), -0.7, "cancellation_page", n, 1] for n in range(5)]
    low = mood.describe({"mood": many}, settings, now=NOW, rules=rules)
    assert low.score == -1.0
    assert (low.label, low.churn_risk) == ("negative", True)
    assert len(low.reasons) == 3
    assert low.reasons[0]["label"] == "visited the cancellation page"
    empty = mood.describe({}, settings, now=NOW, rules=rules)
    assert (empty.label, empty.score, empty.reasons, empty.signals) == ("neutral", 0.0, [], 0)


def test_churn_risk_expires(log: Log) -> None:
    rules = mood.RuleSet(version=0, rules=mood.DEFAULT_RULES)
    settings = MoodSettings(churn_risk_days=30)
    fresh = mood.describe(
        {"mood": [[_at(29), -0.7, "cancellation_page", 1, 1]]}, settings, now=NOW, rules=rules
    )
    stale = mood.describe(
        {"mood": [[_at(31), -0.7, "cancellation_page", 1, 1]]}, settings, now=NOW, rules=rules
    )
    assert (fresh.churn_risk, stale.churn_risk) == (True, False)


def _profile(client: TestClient, headers: dict[str, str], **lookup: str) -> dict[str, Any]:
    answer = client.get("/v1/profiles", params=lookup, headers=headers)
    assert answer.status_code == 200, answer.text
    (profile,) = answer.json()["items"]
    return profile  # type: ignore[no-any-return]


def _now_stamp(days_ago: float = 0) -> str:
    from closedloop import clock

    return (clock.now() - timedelta(days=days_ago)).isoformat()


def test_profile_shows_mood_with_reasons_across_merges(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    visit = {"type": "page", "anonymousId": "anon-5", "properties": {"path": "/account/kuendigung"}}
    visit["timestamp"] = _now_stamp(2)
    log.send(visit)
    rated = track("NPS Answered", user_id="cust-5", properties={"score": 3})
    rated["timestamp"] = _now_stamp(1)
    log.send(rated)
    log.send(identify("cust-5", "anon-5"))
    log.process()
    profile = _profile(client, admin_headers, user_id="cust-5")
    got = profile["mood"]
    assert got["label"] == "negative"
    assert got["churn_risk"] is True
    assert [r["rule"] for r in got["reasons"]] == [
        "nps",
        "cancellation_page",
    ]  # -0.7 each, NPS newer
    assert got["reasons"][1]["at"][:10] == _now_stamp(2)[:10]
    assert got["signals"] == 2

    happy = track("NPS Answered", user_id="cust-6", properties={"score": 10})
    happy["timestamp"] = _now_stamp(0)
    log.send(happy)
    log.process()
    assert _profile(client, admin_headers, user_id="cust-6")["mood"]["label"] == "positive"


def test_rules_are_data_through_the_api(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    shipped = client.get("/v1/mood/rules", headers=admin_headers).json()
    assert shipped["version"] == 0
    assert {r["name"] for r in shipped["rules"]} >= {
        "nps",
        "cancellation_page",
        "callcenter_complaint",
    }
    mine = {
        "rules": [
            {
                "name": "vip_trait",
                "label": "became a VIP",
                "trait": "vip",
                "equals": True,
                "weight": 0.5,
            },
            {
                "name": "return",
                "label": "returned an order",
                "event": "Order Returned",
                "weight": -0.4,
            },
        ]
    }
    answer = client.put("/v1/mood/rules", json=mine, headers=admin_headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 1
    log.send(identify("vip-1", vip=True), track("Order Returned", user_id="vip-1"))
    log.process()
    got = _profile(client, admin_headers, user_id="vip-1")["mood"]
    assert sorted(r["rule"] for r in got["reasons"]) == ["return", "vip_trait"]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"rules": [{"name": "x", "label": "x", "event": "E", "weight": 2}]}, "rules[0].weight"),
        ({"rules": [{"name": "X Y", "label": "x", "event": "E", "weight": 1}]}, "rules[0].name"),
        ({"rules": [{"name": "x\n", "label": "x", "event": "E", "weight": 1}]}, "rules[0].name"),
        (
            {"rules": [{"name": "x", "label": "x", "page": "/kuendigen\n", "weight": 1}]},
            "rules[0].page",
        ),
        ({"rules": [{"name": "x", "label": "x", "weight": 1}]}, "rules[0]"),
        ({"rules": [{"name": "x", "label": "x", "page": "(a+)+$", "weight": 1}]}, "rules[0].page"),
        (
            {"rules": [{"name": "x", "label": "x", "page": "/a*b*c*d*e*f*g", "weight": 1}]},
            "rules[0].page",
        ),
        (
            {
                "rules": [
                    {
                        "name": "x",
                        "label": "x",
                        "event": "E",
                        "weight": 1,
                        "code": "__import__('os')",
                    }
                ]
            },
            "rules[0].code",
        ),
        ({"rules": [{"name": "x", "label": "x", "event": "E", "weight": 1}] * 2}, "rules"),
        ({"rules": []}, "rules"),
        (
            {
                "rules": [
                    {
                        "name": "x",
                        "label": "x",
                        "event": "E",
                        "weight": 1,
                        "scale": {"property": "s", "points": [[5, 1], [1, 0]]},
                    }
                ]
            },
            "rules[0].scale",
        ),
        ({"rules": "nps"}, "rules"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(
    client: TestClient, admin_headers: dict[str, str], document: dict[str, Any], field: str
) -> None:
    answer = client.put("/v1/mood/rules", json=document, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert client.get("/v1/mood/rules", headers=admin_headers).json()["version"] == 0


def test_apply_yaml_and_print_rules(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    runner = CliRunner()
    printed = runner.invoke(app, ["mood", "rules"])
    assert printed.exit_code == 0, printed.output
    assert "version 0 (the shipped defaults)" in printed.output
    path = tmp_path / "rules.yaml"
    path.write_text(printed.output.replace("nps", "nps_survey"), encoding="utf-8")
    applied = runner.invoke(app, ["apply", str(path)])
    assert applied.exit_code == 0, applied.output
    assert "version 1, 11 rules stored" in applied.output
    assert mood.current_rules(engine).rules.rules[0].name == "nps_survey"
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(
        "kind: mood_rules\nrules: !!python/object/apply:os.system ['true']\n", encoding="utf-8"
    )
    refused = runner.invoke(app, ["apply", str(hostile)])
    assert refused.exit_code == 1
    assert "not valid YAML" in refused.output
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("kind: campaign\n", encoding="utf-8")
    refused_kind = runner.invoke(app, ["apply", str(wrong)]).output
    assert "expected `kind: mood_rules | segment | feed | survey`" in refused_kind
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: mood_rules\nrules:\n  - {name: x, label: x, event: E, weight: 5}\n", encoding="utf-8"
    )
    result = runner.invoke(app, ["apply", str(bad)])
    assert result.exit_code == 1
    assert "invalid `rules[0].weight`" in result.output
    assert mood.current_rules(engine).version == 1

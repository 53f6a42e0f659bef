"""The timing rules, exactly, as pure decisions; sampling within binomial bounds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from closedloop.surveys import Facts, decide, in_sample, parse_survey
from closedloop.surveys.eligibility import next_in_window

ALWAYS = {
    "start": "00:00",
    "end": "23:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _survey(**fields: Any) -> Any:
    return parse_survey({"name": "nps", "window": ALWAYS, **fields})


def _facts(**fields: Any) -> Facts:
    base: dict[str, Any] = {
        "profile_id": "p_1",
        "email": "a@example.de",
        "consented": True,
        "created_at": None,
        "last_invited_at": None,
        "sent_this_month": 0,
    }
    return Facts(**{**base, **fields})


def test_min_3_max_14_identified_on_day_1_is_due_on_day_3() -> None:
    survey = _survey(min_delay_days=3, max_delay_days=14)
    created = NOW - timedelta(days=1)
    decision = decide(survey, _facts(created_at=created.date().isoformat()), at=NOW)
    assert decision.invite
    assert decision.due_at == datetime(2026, 11, 25, tzinfo=UTC)  # day 3 after creation
    assert decision.reason == "due 2026-11-25T00:00+00:00"


def test_min_3_max_14_created_20_days_ago_is_never_mailed() -> None:
    survey = _survey(min_delay_days=3, max_delay_days=14)
    created = (NOW - timedelta(days=20)).date().isoformat()
    decision = decide(survey, _facts(created_at=created), at=NOW)
    assert not decision.invite
    assert decision.reason == f"too old: created {created}, more than 14 days before this trigger"


def test_min_0_is_at_once_and_max_0_has_no_limit() -> None:
    decision = decide(_survey(), _facts(created_at="2020-01-01"), at=NOW)
    assert decision.invite and decision.due_at == NOW and decision.reason == "due now"


def test_without_created_at_the_trigger_day_counts() -> None:
    decision = decide(_survey(min_delay_days=2, max_delay_days=5), _facts(), at=NOW)
    assert decision.due_at == datetime(2026, 11, 25, tzinfo=UTC)


def test_interval() -> None:
    survey = _survey()
    last = NOW - timedelta(weeks=10)
    within = decide(survey, _facts(last_invited_at=last), at=NOW)
    assert not within.invite
    assert within.reason == "interval: last surveyed 2026-09-14, again from 2027-03-15"
    after = decide(survey, _facts(last_invited_at=NOW - timedelta(weeks=27)), at=NOW)
    assert after.invite


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        ({"email": None}, "no e-mail address"),
        ({"consented": False}, "no consent for `surveys`"),
        ({"suppressed": True}, "suppressed"),
    ],
)
def test_not_mailed_without_email_consent_or_when_suppressed(
    facts: dict[str, Any], reason: str
) -> None:
    decision = decide(_survey(), _facts(**facts), at=NOW)
    assert not decision.invite and decision.reason == reason


def test_budget() -> None:
    survey = _survey(monthly_budget=100)
    assert decide(survey, _facts(sent_this_month=99), at=NOW).invite
    full = decide(survey, _facts(sent_this_month=100), at=NOW)
    assert not full.invite and full.reason == "budget reached: 100 this month"


def test_sampling_within_binomial_bounds_and_stable() -> None:
    n, share = 10_000, 0.3
    chosen = [in_sample("nps", f"p_{i}", 30) for i in range(n)]
    bound = 4 * math.sqrt(n * share * (1 - share))  # four standard deviations
    assert abs(sum(chosen) - n * share) < bound
    assert chosen == [in_sample("nps", f"p_{i}", 30) for i in range(n)]
    out = next(i for i in range(n) if not chosen[i])
    decision = decide(_survey(sample_percent=30), _facts(profile_id=f"p_{out}"), at=NOW)
    assert not decision.invite and decision.reason == "sampled out (30 % are asked)"


def test_sending_window_moves_the_due_time() -> None:
    survey = parse_survey({"name": "nps"})  # 09:00-18:00 Berlin, Monday to Saturday
    saturday_night = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)  # 21:00 in Berlin
    assert next_in_window(saturday_night, survey.window) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    decision = decide(survey, _facts(), at=saturday_night)
    assert decision.due_at == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad"}, "name"),
        ({"min_delay_days": 5, "max_delay_days": 2}, "survey"),
        ({"sample_percent": 0}, "sample_percent"),
        ({"window": {"start": "18:00", "end": "09:00"}}, "window"),
        ({"window": {"timezone": "Mars/Base"}}, "window.timezone"),
        ({"sender": "x@y.de\r\nBcc: all@evil.example"}, "sender"),
        ({"trigger": "segment_entry"}, "survey"),
        ({"interval_weeks": -1}, "interval_weeks"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_definitions_name_the_field(change: dict[str, Any], field: str) -> None:
    from closedloop.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as caught:
        parse_survey({"name": "nps", **change})
    assert caught.value.field == field


def test_checks_name_every_rule_and_the_next_eligible_date() -> None:
    from closedloop.surveys.eligibility import checks

    survey = _survey(min_delay_days=3, max_delay_days=14, interval_weeks=26, monthly_budget=5)
    created = (NOW - timedelta(days=1)).date().isoformat()
    found, next_at = checks(survey, _facts(created_at=created), at=NOW)
    by_rule = {c.rule: c for c in found}
    assert [c.rule for c in found] == [
        "max_delay_days",
        "audience",
        "email",
        "consent",
        "min_delay_days",
        "interval_weeks",
        "sample_percent",
        "monthly_budget",
    ]
    assert not by_rule["min_delay_days"].passed and by_rule["max_delay_days"].passed
    assert next_at == datetime(2026, 11, 25, tzinfo=UTC)
    last = NOW - timedelta(weeks=2)
    found, next_at = checks(survey, _facts(last_invited_at=last), at=NOW)
    interval = next(c for c in found if c.rule == "interval_weeks")
    assert not interval.passed and "again from 2027-05-10" in interval.value
    assert next_at == last + timedelta(weeks=26)
    found, next_at = checks(survey, _facts(consented=False), at=NOW)
    assert next_at is None and not next(c for c in found if c.rule == "consent").passed
    found, next_at = checks(survey, _facts(sent_this_month=5), at=NOW)
    assert next_at == datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize("seed", range(200))
def test_checks_agree_with_decide(seed: int) -> None:
    import random

    from closedloop.surveys.eligibility import checks

    rng = random.Random(seed)
    survey = _survey(
        min_delay_days=rng.choice([0, 3]),
        max_delay_days=rng.choice([0, 14]),
        interval_weeks=rng.choice([0, 26]),
        sample_percent=rng.choice([100, 50]),
        monthly_budget=rng.choice([None, 3]),
    )
    facts = _facts(
        profile_id=f"p_{seed}",
        email=rng.choice([None, "a@example.de"]),
        consented=rng.random() < 0.8,
        created_at=(NOW - timedelta(days=rng.randint(0, 30))).date().isoformat(),
        last_invited_at=rng.choice([None, NOW - timedelta(weeks=rng.randint(1, 40))]),
        sent_this_month=rng.randint(0, 4),
        in_audience=rng.random() < 0.9,
    )
    found, _next = checks(survey, facts, at=NOW)
    decision = decide(survey, facts, at=NOW)
    lasting_or_timing_ok = all(c.passed for c in found if c.rule != "min_delay_days")
    assert decision.invite == lasting_or_timing_ok, (found, decision)

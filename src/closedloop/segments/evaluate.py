"""The reference evaluator: a condition tree over one profile in Python.

Tests check the compiled SQL against it. It follows the SQL's semantics exactly: values
compare only with literals of their own JSON type, text compares by code point, page globs
are case-insensitive for ASCII letters only, and a condition on something missing is false.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from closedloop.config import MoodSettings
from closedloop.mood.rules import glob_matches
from closedloop.mood.score import churn_risk, decayed
from closedloop.profiles.state import NPS_EVENTS
from closedloop.segments.language import to_text

__all__ = ["ProfileFacts", "evaluate"]


@dataclass
class ProfileFacts:
    """What a condition can look at: the stored profile and its events."""

    traits: dict[str, Any]
    consent: dict[str, Any]
    derived: dict[str, Any]
    events: list[dict[str, Any]] = field(
        default_factory=list
    )  # id, type, event, timestamp, payload


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if _kind(actual) != _kind(expected) or _kind(actual) == "other":
        return False
    if isinstance(expected, bool) and op not in ("=", "!="):
        return False
    return bool(
        {
            "=": actual == expected,
            "!=": actual != expected,
            "<": actual < expected,
            "<=": actual <= expected,
            ">": actual > expected,
            ">=": actual >= expected,
        }[op]
    )


def _properties(event: dict[str, Any]) -> dict[str, Any]:
    found = event["payload"].get("properties")
    return found if isinstance(found, dict) else {}


def _has_nps_score(event: dict[str, Any]) -> bool:
    score: Any = _properties(event).get("score")
    return _kind(score) == "number" and 0 <= score <= 10


def _latest_nps(facts: ProfileFacts) -> dict[str, Any] | None:
    """The newest NPS answer (`NPS_EVENTS`) with a score from 0 to 10, by (time, id): the
    answer the processor keeps as `computed.nps`."""
    answers = [
        e
        for e in facts.events
        if e["type"] == "track" and e["event"] in NPS_EVENTS and _has_nps_score(e)
    ]
    return max(answers, key=lambda e: (e["timestamp"], e["id"])) if answers else None


def evaluate(
    tree: dict[str, Any],
    facts: ProfileFacts,
    *,
    now: datetime,
    mood: MoodSettings,
    segment: Callable[[str], dict[str, Any]],
) -> bool:
    def since(spec: dict[str, Any]) -> datetime | None:
        return now - timedelta(days=spec["within_days"]) if "within_days" in spec else None

    def score() -> float:
        return sum(decayed(facts.derived.get("mood") or [], now=now, settings=mood))

    def visit(node: dict[str, Any]) -> bool:
        ((kind, value),) = node.items()
        if kind == "and":
            return all(visit(c) for c in value)
        if kind == "or":
            return any(visit(c) for c in value)
        if kind == "not":
            return not visit(value)
        if kind == "mood":
            s = score()
            if value == "positive":
                return s >= mood.positive_threshold
            if value == "negative":
                return s <= mood.negative_threshold
            return mood.negative_threshold < s < mood.positive_threshold
        if kind == "churn_risk":
            return churn_risk(facts.derived.get("mood") or [], now=now, settings=mood)
        if kind == "consent":
            statement: Any = facts.consent.get(value)
            return bool(statement) and statement[0] is True
        if kind == "segment":
            return visit(segment(value))
        if kind == "latest_nps":
            latest = _latest_nps(facts)
            if latest is None:
                return False
            start = since(value)
            if start is not None and latest["timestamp"] < start:
                return False
            return _compare(float(_properties(latest)["score"]), value["op"], float(value["value"]))
        if kind == "visited_page":
            start = since(value)
            return any(
                e["type"] in ("page", "screen")
                and (start is None or e["timestamp"] >= start)
                and isinstance(_properties(e).get("path"), str)
                and glob_matches(value["path"], _properties(e)["path"])
                for e in facts.events
            )
        if kind == "did":
            start = since(value)
            wanted = value.get("with", {})
            count = sum(
                1
                for e in facts.events
                if e["type"] == "track"
                and e["event"] == value["event"]
                and (start is None or e["timestamp"] >= start)
                and all(
                    name in _properties(e) and _equal(_properties(e)[name], expected)
                    for name, expected in wanted.items()
                )
            )
            return bool(count >= value.get("at_least", 1))
        return _trait(value, facts, now)

    return visit(tree)


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return _kind(actual) == "number" and float(actual) == float(expected)
    return _compare(actual, "=", expected)


def _trait(spec: dict[str, Any], facts: ProfileFacts, now: datetime) -> bool:
    stored = facts.traits.get(spec["name"])
    value = stored[0] if stored else None
    op = spec["op"]
    if op == "present":
        return stored is not None and value is not None
    if op == "absent":
        return not (stored is not None and value is not None)
    if op == "in":
        return any(_equal(value, item) for item in spec["value"])
    if op in ("before", "after"):
        if not isinstance(value, str):
            return False
        day = value[:10]
        if len(day) != 10 or day[4] != "-" or day[7] != "-":
            return False
        cutoff = (now - timedelta(days=spec["days_ago"])).date().isoformat()
        return day < cutoff if op == "before" else day > cutoff
    expected = spec["value"]
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return _kind(value) == "number" and _compare(float(value or 0), op, float(expected))
    return _compare(value, op, expected)


def explain(
    tree: dict[str, Any],
    facts: ProfileFacts,
    *,
    now: datetime,
    mood: MoodSettings,
    segment: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Which parts of the condition hold for this profile, each with the value it looked at."""

    def look(node: dict[str, Any]) -> dict[str, Any]:
        ((kind, value),) = node.items()
        out: dict[str, Any] = {
            "condition": to_text(node),
            "matched": evaluate(node, facts, now=now, mood=mood, segment=segment),
        }
        if kind in ("and", "or"):
            out["parts"] = [look(c) for c in value]
        elif kind == "not":
            out["parts"] = [look(value)]
        elif kind == "segment":
            out["parts"] = [look(segment(value))]
        elif kind == "trait":
            stored = facts.traits.get(value["name"])
            out["value"] = stored[0] if stored else None
        elif kind == "consent":
            stored = facts.consent.get(value)
            out["value"] = stored[0] if stored else None
        elif kind == "latest_nps":
            latest = _latest_nps(facts)
            if latest is not None:
                out["value"] = {
                    "score": _properties(latest)["score"],
                    "at": latest["timestamp"].isoformat(),
                }
            else:
                out["value"] = None
        elif kind == "mood":
            out["value"] = round(
                sum(decayed(facts.derived.get("mood") or [], now=now, settings=mood)), 4
            )
        return out

    return look(tree)

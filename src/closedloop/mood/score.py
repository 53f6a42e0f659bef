"""Signals from events, and the mood they add up to.

The processor calls `MoodHook` for every event: a matching rule adds a signal
`[time, value, rule, event id, churn risk]` to the profile (the newest `max_signals` are
kept). The mood is computed when asked, for the time asked, because signals fade: each
counts `value * 0.5 ** (age / half-life)`; the sum, clamped to [-1, 1], is the score; the
thresholds give positive, neutral or negative; the strongest contributions are the reasons;
a churn-risk signal younger than `churn_risk_days` sets `churn_risk`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from closedloop import clock
from closedloop.config import MoodSettings, Settings
from closedloop.mood.index import DAY_US, MoodBasis, index_numbers, read_basis
from closedloop.mood.rules import MoodRule, RuleSet, current_rules
from closedloop.profiles.state import ProcessedEvent, ProfileState
from closedloop.store import EPOCH, to_epoch_us

__all__ = [
    "DAY_US",
    "NAME",
    "Mood",
    "MoodHook",
    "churn_risk",
    "decayed",
    "describe",
    "signal_of",
    "summary",
]

NAME = "mood"
_LN_HALF = math.log(0.5)
_PATHS_KEPT = 10_000  # page paths whose matching page rules a batch remembers


@dataclass(frozen=True)
class Mood:
    label: str
    score: float
    churn_risk: bool
    reasons: list[dict[str, Any]]
    signals: int

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "churn_risk": self.churn_risk,
            "reasons": self.reasons,
            "signals": self.signals,
        }


def _path(ev: ProcessedEvent) -> str | None:
    properties = ev.payload.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get("path"), str):
        return str(properties["path"])
    context = ev.payload.get("context")
    page = context.get("page") if isinstance(context, dict) else None
    if isinstance(page, dict) and isinstance(page.get("path"), str):
        return str(page["path"])
    return None


def _where_holds(rule: MoodRule, properties: dict[str, Any]) -> bool:
    for name, expected in rule.where.items():
        value = properties.get(name)
        if isinstance(expected, list):
            if value not in expected:
                return False
        elif value != expected:
            return False
    return True


def signal_of(rule: MoodRule, ev: ProcessedEvent) -> float | None:
    """The rule's signal for the event, or None when it does not match."""
    payload = ev.payload
    source: dict[str, Any]
    if rule.event is not None:
        if ev.type != "track" or ev.name != rule.event:
            return None
        properties = payload.get("properties")
        source = properties if isinstance(properties, dict) else {}
        if rule.where and not _where_holds(rule, source):
            return None
    elif rule.page is not None:
        if ev.type not in ("page", "screen"):
            return None
        path = _path(ev)
        if path is None or not rule.matches_path(path):
            return None
        properties = payload.get("properties")
        source = properties if isinstance(properties, dict) else {}
    else:
        traits = payload.get("traits") if ev.type == "identify" else None
        if not isinstance(traits, dict) or rule.trait not in traits:
            return None
        if rule.equals is not None and traits[rule.trait] != rule.equals:
            return None
        source = traits
    if rule.scale is None:
        return rule.weight
    factor = rule.scale.factor(source.get(rule.scale.property))
    return None if factor is None else round(rule.weight * factor, 6)


class MoodHook:
    """The processor's hook (registered by `closedloop.mood`)."""

    name = NAME

    def prepare(self, conn: sa.Connection, settings: Settings) -> Any:
        rules = current_rules(conn).rules.rules
        by_event: dict[str, list[MoodRule]] = {}
        pages: list[MoodRule] = []
        traits: list[MoodRule] = []
        for rule in rules:
            if rule.event is not None:
                by_event.setdefault(rule.event, []).append(rule)
            elif rule.page is not None:
                pages.append(rule)
            else:
                traits.append(rule)
        # The index numbers follow the stored basis; before there is one, any will do:
        # `ensure_basis` computes every profile's numbers when it writes the first.
        basis = read_basis(conn) or MoodBasis.starting(clock.now(), settings.mood.half_life_days)
        # Shops' page paths recur: each is matched against the page rules once a batch.
        by_path: dict[str, tuple[MoodRule, ...]] = {}
        return by_event, pages, traits, settings.mood.max_signals, basis, by_path

    def on_event(self, context: Any, p: ProfileState, ev: ProcessedEvent) -> bool:
        by_event, pages, traits, limit, basis, by_path = context
        if ev.type == "track":
            candidates = by_event.get(ev.name or "", ())
        elif ev.type in ("page", "screen"):
            path = _path(ev)
            if path is None or not pages:
                return False
            candidates = by_path.get(path)
            if candidates is None:
                if len(by_path) >= _PATHS_KEPT:
                    by_path.clear()
                candidates = by_path[path] = tuple(r for r in pages if r.matches_path(path))
        elif ev.type == "identify":
            candidates = traits
        else:
            return False
        changed = False
        for rule in candidates:
            value = signal_of(rule, ev)
            if value is None:
                continue
            signals = p.derived.setdefault(NAME, [])
            signals.append([ev.timestamp, value, rule.name, ev.id, 1 if rule.churn_risk else 0])
            if len(signals) > 1 and (signals[-2][0], signals[-2][3]) > (ev.timestamp, ev.id):
                signals.sort(key=lambda s: (s[0], s[3]))  # a late event: keep time order
            if len(signals) > limit:
                del signals[: len(signals) - limit]
            changed = True
        if changed:
            p.derived.update(index_numbers(p.derived[NAME], basis))
        return changed

    def on_merge(self, context: Any, survivor: ProfileState, merged: ProfileState) -> None:
        theirs = merged.derived.get(NAME)
        if not theirs:
            return
        limit, basis = context[3], context[4]
        joined = sorted([*survivor.derived.get(NAME, []), *theirs], key=lambda s: (s[0], s[3]))
        survivor.derived[NAME] = joined[-limit:]
        survivor.derived.update(index_numbers(survivor.derived[NAME], basis))


def decayed(signals: list[list[Any]], *, now: datetime, settings: MoodSettings) -> list[float]:
    """Each signal's contribution at `now`: `value * 0.5 ** (age / half-life)`, computed as
    `exp(ln 0.5 * age / half-life)` like the SQL of segment conditions, so both agree."""
    now_us = to_epoch_us(now)
    half_life_us = settings.half_life_days * DAY_US
    return [
        value * math.exp(_LN_HALF * max(0, now_us - at) / half_life_us)
        for at, value, *_rest in signals
    ]


def churn_risk(signals: list[list[Any]], *, now: datetime, settings: MoodSettings) -> bool:
    """Whether a churn-risk signal is younger than `churn_risk_days`."""
    cutoff = to_epoch_us(now) - settings.churn_risk_days * DAY_US
    return any(s[4] == 1 and s[0] >= cutoff for s in signals)


def _score_label(total: float, settings: MoodSettings) -> tuple[float, str]:
    score = round(max(-1.0, min(1.0, total)), 4)
    if score >= settings.positive_threshold:
        return score, "positive"
    if score <= settings.negative_threshold:
        return score, "negative"
    return score, "neutral"


def summary(
    derived: dict[str, Any], settings: MoodSettings, *, now: datetime
) -> tuple[str, float, bool]:
    """(label, score, churn risk) at `now`, without the reasons (feeds, lists)."""
    signals = derived.get(NAME) or []
    score, label = _score_label(sum(decayed(signals, now=now, settings=settings)), settings)
    return label, score, churn_risk(signals, now=now, settings=settings)


def describe(
    derived: dict[str, Any], settings: MoodSettings, *, now: datetime, rules: RuleSet
) -> Mood:
    """The mood at `now` from the profile's signals."""
    signals = derived.get(NAME) or []
    labels = {r.name: r.label for r in rules.rules.rules}
    contributions = [
        (contribution, at, value, rule, event_id)
        for contribution, (at, value, rule, event_id, _churn) in zip(
            decayed(signals, now=now, settings=settings), signals, strict=True
        )
    ]
    churn = churn_risk(signals, now=now, settings=settings)
    score, label = _score_label(sum(c[0] for c in contributions), settings)
    strongest = sorted(contributions, key=lambda c: (-abs(c[0]), -c[1]))[: settings.reasons]
    reasons = [
        {
            "rule": rule,
            "label": labels.get(rule, rule),
            "event_id": event_id,
            "at": (EPOCH + timedelta(microseconds=at)).isoformat(),
            "value": value,
            "contribution": round(contribution, 4),
        }
        for contribution, at, value, rule, event_id in strongest
        if contribution != 0
    ]
    return Mood(label, score, churn, reasons, len(signals))

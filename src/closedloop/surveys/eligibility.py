"""Whether and when a customer is surveyed: the timing rules, exactly, with the reason.

For a trigger (an identify, or an entry into the survey's segment) at time `at`:

- the customer counts as created at the trait `createdAt` (an ISO date or date-time), or,
  without one, on the day of the trigger;
- with `max_delay_days` > 0, a customer created more than that many days before the trigger
  is never surveyed for it ("too old");
- otherwise the invitation is due `min_delay_days` after creation, and at once when that day
  has passed (0: at once); the sending window may move it to its next opening;
- `interval_weeks` after the person's last invitation of this survey must have passed on the
  due day;
- `sample_percent`: a hash of survey and profile decides, the same each time;
- no e-mail address, no consent for the survey's purpose, or the monthly budget reached:
  not surveyed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from closedloop.surveys.definition import SurveyDefinition, Window

__all__ = [
    "Check",
    "Decision",
    "Facts",
    "checks",
    "created_day",
    "decide",
    "in_sample",
    "next_in_window",
]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Facts:
    """What a decision looks at, gathered for one profile at one trigger."""

    profile_id: str
    email: str | None
    consented: bool
    created_at: object  # the `createdAt` trait as sent, or None
    last_invited_at: datetime | None
    sent_this_month: int
    suppressed: bool = False
    in_audience: bool = True


@dataclass(frozen=True)
class Decision:
    invite: bool
    reason: str
    due_at: datetime | None = None


def created_day(value: object, *, fallback: date) -> date:
    """The day of `createdAt` (ISO date or date-time); `fallback` when missing or unreadable."""
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return fallback
    return fallback


def in_sample(survey: str, profile_id: str, percent: float) -> bool:
    """The same answer each time for the same survey and profile."""
    if percent >= 100:
        return True
    digest = hashlib.sha256(f"{survey}\x1f{profile_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < round(percent * 100)


def next_in_window(moment: datetime, window: Window) -> datetime:
    """`moment`, or the next opening of the sending window after it (in the window's zone)."""
    zone = ZoneInfo(window.timezone)
    local = moment.astimezone(zone)
    for _ in range(8):
        day_ok = _DAYS[local.weekday()] in window.days
        opens = local.replace(
            hour=window.start.hour, minute=window.start.minute, second=0, microsecond=0
        )
        closes = local.replace(
            hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0
        )
        if day_ok and local < closes:
            return max(local, opens).astimezone(UTC)
        local = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return moment  # a window with no day cannot be defined; keep the time


def decide(definition: SurveyDefinition, facts: Facts, *, at: datetime) -> Decision:
    """The decision for a trigger at `at` (UTC)."""
    today = at.astimezone(UTC).date()
    created = created_day(facts.created_at, fallback=today)
    age = (today - created).days
    if definition.max_delay_days and age > definition.max_delay_days:
        return Decision(
            False,
            f"too old: created {created.isoformat()}, more than "
            f"{definition.max_delay_days} days before this trigger",
        )
    if not facts.in_audience:
        return Decision(False, "not in the audience")
    if not facts.email:
        return Decision(False, "no e-mail address")
    if not facts.consented:
        return Decision(False, f"no consent for `{definition.purpose}`")
    if facts.suppressed:
        return Decision(False, "suppressed")
    due_day = created + timedelta(days=definition.min_delay_days)
    due = at if due_day <= today else datetime.combine(due_day, datetime.min.time(), UTC)
    if facts.last_invited_at is not None and definition.interval_weeks:
        free = facts.last_invited_at + timedelta(weeks=definition.interval_weeks)
        if due < free:
            return Decision(
                False,
                f"interval: last surveyed {facts.last_invited_at.date().isoformat()}, "
                f"again from {free.date().isoformat()}",
            )
    if not in_sample(definition.name, facts.profile_id, definition.sample_percent):
        return Decision(False, f"sampled out ({definition.sample_percent:g} % are asked)")
    if definition.monthly_budget is not None and facts.sent_this_month >= definition.monthly_budget:
        return Decision(False, f"budget reached: {definition.monthly_budget} this month")
    due = next_in_window(due, definition.window)
    if due > at:
        return Decision(True, f"due {due.isoformat(timespec='minutes')}", due)
    return Decision(True, "due now", due)


@dataclass(frozen=True)
class Check:
    """One timing rule for one customer: what it looked at, and whether it passes."""

    rule: str
    value: str
    passed: bool


def checks(
    definition: SurveyDefinition, facts: Facts, *, at: datetime
) -> tuple[list[Check], datetime | None]:
    """Every rule of `decide` with its value and pass or fail (not stopping at the first
    failure), and the next moment the customer could be invited (None: not while a rule
    that time does not change fails)."""
    today = at.astimezone(UTC).date()
    created = created_day(facts.created_at, fallback=today)
    age = (today - created).days
    found: list[Check] = []
    limit = definition.max_delay_days
    found.append(
        Check(
            "max_delay_days",
            f"created {created.isoformat()} ({age} days ago; at most {limit or '-'})",
            not limit or age <= limit,
        )
    )
    found.append(
        Check(
            "audience", "in the audience" if facts.in_audience else "not in it", facts.in_audience
        )
    )
    found.append(Check("email", "present" if facts.email else "missing", bool(facts.email)))
    found.append(
        Check(
            "consent",
            f"`{definition.purpose}` " + ("granted" if facts.consented else "not granted"),
            facts.consented,
        )
    )
    due_day = created + timedelta(days=definition.min_delay_days)
    due = at if due_day <= today else datetime.combine(due_day, datetime.min.time(), UTC)
    found.append(
        Check(
            "min_delay_days",
            f"from {due_day.isoformat()} ({definition.min_delay_days} days)",
            due_day <= today,
        )
    )
    free = None
    last = facts.last_invited_at
    interval = "never surveyed"
    if last is not None and definition.interval_weeks:
        free = last + timedelta(weeks=definition.interval_weeks)
        interval = f"last surveyed {last.date().isoformat()}, again from {free.date().isoformat()}"
    found.append(
        Check(
            "interval_weeks",
            interval,
            free is None or due >= free,
        )
    )
    sampled = in_sample(definition.name, facts.profile_id, definition.sample_percent)
    found.append(Check("sample_percent", f"{definition.sample_percent:g} % are asked", sampled))
    budget = definition.monthly_budget
    found.append(
        Check(
            "monthly_budget",
            f"{facts.sent_this_month} sent this month" + (f" of {budget}" if budget else ""),
            budget is None or facts.sent_this_month < budget,
        )
    )
    lasting = {"max_delay_days", "audience", "email", "consent", "sample_percent"}
    if any(not c.passed for c in found if c.rule in lasting):
        return found, None
    moment = max([due, *([free] if free else [])])
    if budget is not None and facts.sent_this_month >= budget:
        first = (at.astimezone(UTC).replace(day=1) + timedelta(days=32)).replace(day=1)
        moment = max(moment, first.replace(hour=0, minute=0, second=0, microsecond=0))
    return found, next_in_window(moment, definition.window)

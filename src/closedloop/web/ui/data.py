"""What the dashboard's views show, read through the domains' own functions (and a few
read-only queries of their tables): no business rule lives here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import feeds, mood, profiles, segments
from closedloop.config import Settings
from closedloop.errors import InvalidInputError
from closedloop.identity import is_customer_key
from closedloop.profiles.read import find_profile, get_profile, timeline
from closedloop.segments._tables import mood_sizes, segment_sizes
from closedloop.segments.compile import escape_like
from closedloop.segments.history import history_of, segments_at
from closedloop.surveys._tables import survey_answers
from closedloop.web.ui.charts import sparkline

__all__ = [
    "GROUPS",
    "comments",
    "customer",
    "guess_kind",
    "mood_counts",
    "nps_of",
    "overview",
    "segment_rows",
    "timeline_page",
]

GROUPS = {"detractors": (0, 6), "passives": (7, 8), "promoters": (9, 10)}


def nps_of(scores: list[int]) -> int | None:
    """NPS as an integer from -100 to +100 (promoters minus detractors, in percent)."""
    if not scores:
        return None
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return round(100 * (promoters - detractors) / len(scores))


def mood_counts(
    engine: Engine, settings: Settings, now: datetime
) -> tuple[dict[str, int], datetime]:
    """Customers by mood: the counts of the newest segment refresh when recent, else counted
    now (one pass over the profiles)."""
    latest = segments.latest_moods(engine)
    fresh = timedelta(seconds=max(2 * settings.segments.refresh_seconds, 300))
    if latest is not None and now - latest[0] <= fresh:
        return latest[1], latest[0]
    with engine.connect() as conn:
        return segments.count_moods(conn, settings, now), now


def _nps_period(engine: Engine, start: datetime, end: datetime) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(survey_answers.c.score).where(
                    survey_answers.c.answered_at >= start, survey_answers.c.answered_at < end
                )
            ).scalars()
        )


def overview(engine: Engine, settings: Settings, now: datetime) -> dict[str, Any]:
    days = timedelta(days=90)
    current = _nps_period(engine, now - days, now + timedelta(seconds=1))
    previous = _nps_period(engine, now - 2 * days, now - days)
    nps, before = nps_of(current), nps_of(previous)
    moods, moods_at = mood_counts(engine, settings, now)
    lag = profiles.lag(engine)
    health = {h.feed: h for h in feeds.health(engine)}
    feed_rows = []
    for saved in feeds.list_feeds(engine):
        h = health.get(saved.name)
        feed_rows.append(
            {
                "name": saved.name,
                "last_run": saved.last_run,
                "last_success_at": h.last_success_at if h else None,
                "failing": bool(h and h.last_failed),
                "next_run_at": saved.next_run_at,
            }
        )
    with engine.connect() as conn:
        trend = conn.execute(
            sa.select(mood_sizes).order_by(mood_sizes.c.at.desc()).limit(60)
        ).all()[::-1]
    shares: dict[str, list[float]] = {"positive": [], "negative": []}
    for row in trend:
        total = (row.positive + row.neutral + row.negative) or 1
        shares["positive"].append(row.positive / total * 100)
        shares["negative"].append(row.negative / total * 100)
    return {
        "mood_trend": {
            label: {"spark": sparkline(values), "first": values[0], "last": values[-1]}
            for label, values in shares.items()
            if len(values) >= 2
        },
        "nps": {
            "value": nps,
            "n": len(current),
            "previous": before,
            "delta": (nps - before) if nps is not None and before is not None else None,
        },
        "mood": moods,
        "mood_at": moods_at,
        "mood_total": sum(moods.values()),
        "segments": segment_rows(engine),
        "feeds": feed_rows,
        "lag": {
            "events": lag.events,
            "oldest_seconds": round(lag.oldest_seconds),
            "held": lag.held,
            "holder": _holder(lag),
        },
    }


def _holder(lag: profiles.Lag) -> dict[str, Any] | None:
    """The transaction holding events back, as far as the store's user sees it."""
    h = lag.holder  # read only while events are held
    if h is None:
        return None
    seconds = round(lag.held_seconds) if h.since is not None else None
    return {"parts": h.parts, "seconds": seconds}


def segment_rows(engine: Engine) -> list[dict[str, Any]]:
    found = segments.list_segments(engine)
    history: dict[str, list[int]] = {}
    with engine.connect() as conn:
        for name, size in conn.execute(
            sa.select(segment_sizes.c.segment, segment_sizes.c.size).order_by(
                segment_sizes.c.segment, segment_sizes.c.at
            )
        ):
            history.setdefault(name, []).append(size)
    return [
        {
            "name": s.name,
            "condition": s.condition,
            "size": s.size,
            "refreshed_at": s.refreshed_at,
            "sizes": history.get(s.name, [])[-30:],
            "spark": sparkline([float(v) for v in history.get(s.name, [])[-30:]]),
        }
        for s in found
    ]


def guess_kind(query: str) -> str:
    """What a search box holds: an e-mail, a customer key, a phone number or a user id."""
    text = query.strip()
    if "@" in text:
        return "email"
    if is_customer_key(text):
        return "customer_key"
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 6 and all(ch.isdigit() or ch in "+ -/()." for ch in text):
        return "phone"
    return "user_id"


def customer(engine: Engine, settings: Settings, profile_id: str, now: datetime) -> dict[str, Any]:
    """The call-center screen's facts about one customer."""
    found = get_profile(engine, profile_id, purposes=settings.profiles.consent_purposes)
    document = dict(found.as_json())
    rules = mood.current_rules(engine)
    described = mood.describe(found.derived or {}, settings.mood, now=now, rules=rules).as_json()
    membership = segments.explain_profile(engine, settings, found.id, now=now)
    with engine.connect() as conn:
        answers = conn.execute(
            sa.select(
                survey_answers.c.survey,
                survey_answers.c.score,
                survey_answers.c.comment,
                survey_answers.c.answered_at,
            )
            .where(survey_answers.c.profile_id == found.id)
            .order_by(survey_answers.c.answered_at.desc())
            .limit(50)
        ).all()
    return {
        "id": found.id,
        "document": document,
        "mood": described,
        "segments": membership,
        "answers": [dict(a._mapping) for a in answers],
    }


def find(engine: Engine, settings: Settings, query: str) -> str | None:
    """The profile a search finds, or None; a malformed phone or e-mail raises."""
    text = query.strip()
    if not text:
        raise InvalidInputError("type an e-mail, phone, customer key or user id", field="q")
    kind = guess_kind(text)
    # a text that is no e-mail, key or phone may be a user id or an anonymous id
    for candidate in (kind, "anonymous_id") if kind == "user_id" else (kind,):
        found = find_profile(
            engine,
            candidate,
            text,
            region=settings.identity.default_region,
            purposes=settings.profiles.consent_purposes,
        )
        if found is not None:
            break
    return found.id if found is not None else None


def timeline_page(
    engine: Engine,
    profile_id: str,
    *,
    before: int | None,
    channel: str | None,
    text: str | None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the timeline, newest first, grouped by the caller into days; the channel and
    text filters apply to the page read (more are read until the page is full)."""
    shown: list[dict[str, Any]] = []
    cursor = before
    needle = (text or "").strip().lower()
    for _round in range(10):
        _found, page = timeline(engine, profile_id, before_id=cursor, limit=limit)
        if not page:
            return shown, None
        for event in page:
            context = event.payload.get("context")
            named = context.get("channel") if isinstance(context, dict) else None
            event_channel = named if isinstance(named, str) and named else event.source
            title = event.event or event.payload.get("name") or event.type
            if channel and channel not in (event_channel, event.source):
                continue
            if needle and needle not in f"{title} {event.payload}".lower():
                continue
            shown.append(
                {
                    "id": event.id,
                    "type": event.type,
                    "title": str(title),
                    "source": event.source,
                    "channel": event_channel,
                    "at": event.timestamp,
                    "properties": event.payload.get("properties") or event.payload.get("traits"),
                }
            )
            if len(shown) >= limit:
                return shown, int(event.id)
        cursor = int(page[-1].id)
        if len(page) < limit:
            return shown, None
    return shown, cursor


def comments(
    engine: Engine,
    survey: str,
    *,
    group: str | None,
    text: str | None,
    segment: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Answers with a comment, newest first, by NPS group, text and segment (as of the
    answer); each with the segments the customer was in when answering."""
    a = survey_answers.c
    stmt = (
        sa.select(a.invitation_id, a.profile_id, a.score, a.comment, a.answered_at)
        .where(a.survey == survey, a.comment.is_not(None), a.comment != "")
        .order_by(a.answered_at.desc(), a.invitation_id)
        .limit(limit if segment is None else max(limit * 20, 1000))
    )
    if group in GROUPS:
        low, high = GROUPS[group]
        stmt = stmt.where(a.score >= low, a.score <= high)
    if text:
        pattern = f"%{escape_like(text.lower())}%"
        stmt = stmt.where(sa.func.lower(a.comment).like(pattern, escape="\\"))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        history = history_of(conn, sorted({row.profile_id for row in rows}))
    out: list[dict[str, Any]] = []
    for row in rows:
        if len(out) >= limit:
            break
        # the segments as of the answer
        member_of = segments_at(history.get(row.profile_id, ()), row.answered_at)
        if segment is not None and segment not in member_of:
            continue
        out.append(
            {
                "score": row.score,
                "comment": row.comment,
                "at": row.answered_at,
                "segments": member_of,
                "group": next(g for g, (lo, hi) in GROUPS.items() if lo <= row.score <= hi),
            }
        )
    return out

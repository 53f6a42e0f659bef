"""The read side of profiles: look-up by any identifier, the profile document, the timeline."""

from __future__ import annotations

import bisect
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.identity import is_customer_key, normalise_email, normalise_phone
from closedloop.identity._tables import identities, identity_conflicts, identity_merges
from closedloop.identity.graph import ConflictReason, split_key
from closedloop.ingest._tables import events, sources
from closedloop.ingest.log import StoredEvent, event_from_row
from closedloop.profiles._tables import consent_changes, event_attributions, profiles
from closedloop.profiles.state import trait_values
from closedloop.store import EPOCH, parse_row_id

__all__ = [
    "CONFLICT_REASONS",
    "LOOKUP_KINDS",
    "ConsentStatement",
    "Profile",
    "consent_history",
    "find_profile",
    "get_profile",
    "list_conflicts",
    "list_profiles",
    "locate",
    "resolve_profile_id",
    "timeline",
]

LOOKUP_KINDS = ("email", "phone", "user_id", "anonymous_id", "customer_key")
_MAX_ID = 320
_TOP_INTERESTS = 10


@dataclass(frozen=True)
class ConsentStatement:
    purpose: str
    granted: bool
    at: datetime
    source: str
    event_id: int


@dataclass(frozen=True)
class Profile:
    """A profile as the API shows it (`as_json`)."""

    id: str
    document: dict[str, Any]
    derived: dict[str, Any] | None = None  # other domains' data (mood signals), not shown

    def as_json(self) -> dict[str, Any]:
        return self.document


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return (EPOCH + timedelta(microseconds=us)).isoformat()


def _computed(raw: dict[str, Any]) -> dict[str, Any]:
    if not raw:
        return {
            "first_seen": None,
            "last_seen": None,
            "events": 0,
            "events_by_type": {},
            "channels": [],
            "orders": 0,
            "revenue": 0.0,
            "interests": [],
            "nps": None,
        }
    interests = sorted(raw["interests"].items(), key=lambda item: (-item[1], item[0]))
    return {
        "first_seen": _iso(raw["first_seen"]),
        "last_seen": _iso(raw["last_seen"]),
        "events": raw["events"],
        "events_by_type": dict(sorted(raw["by_type"].items())),
        "channels": raw["channels"],
        "orders": raw["orders"],
        "revenue": round(raw["revenue"], 2),
        "interests": [{"category": c, "count": n} for c, n in interests[:_TOP_INTERESTS]],
        "nps": {"score": raw["nps"][0], "at": _iso(raw["nps"][1])} if raw.get("nps") else None,
    }


def resolve_profile_id(conn: sa.Connection, profile_id: str) -> str | None:
    """The surviving profile of `profile_id` (itself unless merged), or None if unknown."""
    if not profile_id or len(profile_id) > 40 or "\x00" in profile_id:
        return None
    row = conn.execute(
        sa.select(profiles.c.id, profiles.c.merged_into).where(profiles.c.id == profile_id)
    ).first()
    if row is None:
        return None
    return str(row.merged_into or row.id)


def _document_and_derived(
    conn: sa.Connection, profile_id: str, purposes: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    row = conn.execute(sa.select(profiles).where(profiles.c.id == profile_id)).one()
    return _document(conn, row, purposes), row.derived


def _document(conn: sa.Connection, row: Any, purposes: tuple[str, ...]) -> dict[str, Any]:
    profile_id = row.id
    ids = conn.execute(
        sa.select(identities.c.key, identities.c.first_seen_at)
        .where(identities.c.profile_id == profile_id)
        .order_by(identities.c.first_seen_at, identities.c.key)
    ).all()
    merged = conn.execute(
        sa.select(identity_merges)
        .where(identity_merges.c.survivor_id == profile_id)
        .order_by(identity_merges.c.id)
    ).all()
    merged_ids = [m.merged_id for m in merged]
    # Profiles merged into one that later merged here came along: list them too.
    indirect = list(
        conn.execute(sa.select(profiles.c.id).where(profiles.c.merged_into == profile_id)).scalars()
    )
    conflicts = _conflicts(conn, [profile_id, *indirect])
    consent = {
        purpose: (
            {
                "granted": row.consent[purpose][0],
                "at": _iso(row.consent[purpose][1]),
                "source": row.consent[purpose][2],
            }
            if purpose in row.consent
            else None
        )
        for purpose in purposes
    }
    return {
        "id": row.id,
        "customer_key": row.customer_key,
        "identities": [
            {
                "kind": split_key(i.key)[0],
                "value": split_key(i.key)[1],
                "first_seen_at": i.first_seen_at.isoformat(),
            }
            for i in ids
        ],
        "traits": trait_values(row.traits),
        "trait_sources": {
            name: {"source": value[2], "at": _iso(value[1])}
            for name, value in sorted(row.traits.items())
        },
        "computed": _computed(row.computed),
        "consent": consent,
        "masterdata": row.masterdata,
        "quality": row.quality,
        "merged_from": [
            {"id": m.merged_id, "via": m.via, "event_id": m.event_id, "at": m.at.isoformat()}
            for m in merged
        ]
        + [
            {"id": pid, "via": "earlier merge", "event_id": None, "at": None}
            for pid in sorted(set(indirect) - set(merged_ids))
        ],
        "conflicts": conflicts,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


_CONFLICTS_SHOWN = 100
CONFLICT_REASONS: tuple[str, ...] = get_args(ConflictReason)


def _conflicts(conn: sa.Connection, held: list[str]) -> list[dict[str, Any]]:
    """The joins the rules refused for a profile: those recorded for any of `held` (the
    profile and every profile merged into it, as recorded with the profiles of their day),
    each side named by the profile that holds it now. Refusals whose two sides were joined
    later (an alias) are not listed: they were settled."""
    c = identity_conflicts.c
    rows = conn.execute(
        sa.select(identity_conflicts)
        .where(sa.or_(c.profile_id.in_(held), c.other_profile_id.in_(held)))
        .order_by(c.id)
        .limit(_CONFLICTS_SHOWN)
    ).all()
    return [
        {k: v for k, v in shown.items() if k not in ("id", "settled")}
        for shown in _shown_conflicts(conn, rows)
        if not shown["settled"]
    ]


def _shown_conflicts(conn: sa.Connection, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Stored refusals as the API shows them: each side the profile that holds it now, and
    whether the two were joined since (`settled`)."""
    named = {pid for r in rows for pid in (r.profile_id, r.other_profile_id) if pid}
    now = {
        row.id: row.merged_into or row.id
        for row in conn.execute(
            sa.select(profiles.c.id, profiles.c.merged_into).where(profiles.c.id.in_(named))
        )
    }
    out = []
    for r in rows:
        ours = now.get(r.profile_id, r.profile_id)
        theirs = now.get(r.other_profile_id, r.other_profile_id) if r.other_profile_id else None
        out.append(
            {
                "id": r.id,
                "profile_id": ours,
                "other_profile_id": theirs,
                "identity": dict(zip(("kind", "value"), split_key(r.identity_key), strict=True)),
                "reason": r.reason,
                "occurrences": r.occurrences,
                "first_event_id": r.first_event_id,
                "last_event_id": r.last_event_id,
                "settled": ours == theirs,
            }
        )
    return out


# How `list_conflicts` orders, and by which column: by when the refusal was first recorded,
# by how often it happened (the most shared devices first), by the newest event that met it.
_SORT_COLUMNS = {"newest": "id", "occurrences": "occurrences", "last_seen": "last_event_id"}
CONFLICT_SORTS = tuple(_SORT_COLUMNS)


def _check_sort(sort: str) -> None:
    if sort not in CONFLICT_SORTS:
        raise InvalidInputError(
            f"invalid `sort` `{sort[:40]}`: use one of {', '.join(CONFLICT_SORTS)}",
            field="sort",
        )


def conflict_cursor(sort: str, value: str | None) -> tuple[int, int] | None:
    """The position after which `list_conflicts` goes on: from a `next_cursor` of the same
    `sort` (`id` when newest first, else `key.id`)."""
    _check_sort(sort)
    if value is None or value == "":
        return None
    parts = value.split(".")
    ids = [i for part in parts if (i := parse_row_id(part)) is not None]
    if len(parts) != (1 if sort == "newest" else 2) or len(ids) != len(parts):
        raise InvalidInputError(
            f"invalid `cursor` `{value[:40]}`: use the `next_cursor` of the previous page "
            "with the same `sort`",
            field="cursor",
        )
    return ids[0], ids[-1]


def next_conflict_cursor(sort: str, page: list[dict[str, Any]], limit: int) -> str | None:
    """The cursor of the page after `page` (None when it was the last)."""
    if len(page) < limit:
        return None
    last = page[-1]
    if sort == "newest":
        return str(last["id"])
    return f"{last[_SORT_COLUMNS[sort]]}.{last['id']}"


def list_conflicts(
    engine: Engine,
    *,
    reason: str | None = None,
    settled: bool | None = None,
    sort: str = "newest",
    after: tuple[int, int] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Every refused join, optionally of one reason and only those an alias settled since
    (`settled=True`) or only the open ones (`False`), in the order `sort` names
    (`CONFLICT_SORTS`, ties newest first), paged after `after` (`conflict_cursor`): the
    shared devices and kiosks a data steward looks at."""
    if reason is not None and reason not in CONFLICT_REASONS:
        raise InvalidInputError(
            f"invalid `reason` `{reason[:40]}`: use one of {', '.join(CONFLICT_REASONS)}",
            field="reason",
        )
    _check_sort(sort)
    c = identity_conflicts.c
    key = c[_SORT_COLUMNS[sort]]
    query = sa.select(identity_conflicts).order_by(key.desc(), c.id.desc()).limit(limit)
    if reason is not None:
        query = query.where(c.reason == reason)
    if after is not None:  # newest first: the key is the id, and `after` the id twice
        query = query.where(sa.or_(key < after[0], sa.and_(key == after[0], c.id < after[1])))
    if settled is not None:
        # Settled: both sides are held by one profile now (`merged_into` names the last
        # survivor); the anonymous-id limit's refusals of a new identifier have no other side.
        ours, theirs = profiles.alias("ours"), profiles.alias("theirs")
        query = query.outerjoin(ours, ours.c.id == c.profile_id).outerjoin(
            theirs, theirs.c.id == c.other_profile_id
        )
        joined = sa.and_(
            c.other_profile_id != "",
            sa.func.coalesce(ours.c.merged_into, c.profile_id)
            == sa.func.coalesce(theirs.c.merged_into, c.other_profile_id),
        )
        query = query.where(joined if settled else sa.not_(joined))
    with engine.connect() as conn:
        return _shown_conflicts(conn, conn.execute(query).all())


def get_profile(engine: Engine, profile_id: str, *, purposes: tuple[str, ...]) -> Profile:
    """The profile `profile_id`, or the one it was merged into."""
    with engine.connect() as conn:
        found = resolve_profile_id(conn, profile_id)
        if found is None:
            raise NotFoundError(f"no profile `{profile_id[:60]}`")
        return Profile(found, *_document_and_derived(conn, found, purposes))


def _lookup_key(kind: str, value: str, *, region: str) -> str:
    if kind == "email":
        normalised = normalise_email(value)
        if normalised.value is None:
            reason = normalised.problem.problem if normalised.problem else "empty"
            raise InvalidInputError(f"invalid `email` `{value[:80]}`: {reason}", field="email")
        return "e:" + normalised.value
    if kind == "phone":
        normalised = normalise_phone(value, region=region)
        if normalised.value is None:
            reason = normalised.problem.problem if normalised.problem else "empty"
            raise InvalidInputError(f"invalid `phone` `{value[:40]}`: {reason}", field="phone")
        return "p:" + normalised.value
    return ("u:" if kind == "user_id" else "a:") + value


def locate(
    conn: sa.Connection, kind: str, value: str, *, region: str
) -> tuple[str | None, str | None]:
    """Check an identifier (`email`, `phone` in any format, `user_id`, `anonymous_id`,
    `customer_key`) and find it: (the profile holding it or None, its identity key, None for
    a customer key)."""
    if kind not in LOOKUP_KINDS:
        raise InvalidInputError(
            f"invalid look-up `{kind[:40]}`: use one of {', '.join(LOOKUP_KINDS)}", field=kind
        )
    if not value or len(value) > _MAX_ID:
        raise InvalidInputError(f"invalid `{kind}`: expected 1 to {_MAX_ID} characters", field=kind)
    if "\x00" in value:
        raise InvalidInputError(f"invalid `{kind}`: contains a NUL character", field=kind)
    if kind == "customer_key":
        if not is_customer_key(value):
            raise InvalidInputError(
                f"invalid `customer_key` `{value[:80]}`: expected `v1.` and 64 hex digits",
                field="customer_key",
            )
        found = conn.execute(
            sa.select(profiles.c.id)
            .where(profiles.c.customer_key == value, profiles.c.merged_into.is_(None))
            .order_by(profiles.c.id)
            .limit(1)
        ).scalar()
        return found, None
    key = _lookup_key(kind, value, region=region)
    found = conn.execute(sa.select(identities.c.profile_id).where(identities.c.key == key)).scalar()
    return found, key


def find_profile(
    engine: Engine, kind: str, value: str, *, region: str, purposes: tuple[str, ...]
) -> Profile | None:
    """The profile holding the identifier (`email`, `phone` in any format, `user_id`,
    `anonymous_id`) or the `customer_key`; None when nobody has it."""
    with engine.connect() as conn:
        found, _key = locate(conn, kind, value, region=region)
        if found is None:
            return None
        return Profile(found, *_document_and_derived(conn, found, purposes))


ANY_PROBLEM = "any"  # `list_profiles(quality=...)`: a profile with any quality problem
_MAX_FIELD = 200


# A profile with a problem: its list is not empty (compared as text on SQLite, as `jsonb`
# on PostgreSQL; both store an empty one as `[]`). Cheaper than parsing every row's list.
_HAS_PROBLEMS = "profiles.quality <> '[]'"


def _quality_filter(dialect: str, quality: str) -> sa.ColumnElement[bool] | sa.TextClause:
    """Profiles with a problem in the master-data field (trait name) `quality`, or with
    any (`ANY_PROBLEM`)."""
    if not quality or len(quality) > _MAX_FIELD or "\x00" in quality:
        raise InvalidInputError(
            f"invalid `quality` `{quality[:40]}`: a trait name (1 to {_MAX_FIELD} characters) "
            f"or `{ANY_PROBLEM}`",
            field="quality",
        )
    if quality == ANY_PROBLEM:
        return sa.text(_HAS_PROBLEMS)
    if dialect == "postgresql":  # the list holds an object with that field (`@>`)
        return sa.text("profiles.quality @> CAST(:quality_field AS jsonb)").bindparams(
            quality_field=json.dumps([{"field": quality}])
        )
    # SQLite: most profiles have no problem, and for them no subquery runs.
    return sa.and_(
        sa.text(_HAS_PROBLEMS),
        sa.text(
            "EXISTS (SELECT 1 FROM json_each(profiles.quality) AS q "
            "WHERE json_extract(q.value, '$.field') = :quality_field)"
        ).bindparams(quality_field=quality),
    )


def list_profiles(
    engine: Engine,
    *,
    after: str | None,
    limit: int,
    purposes: tuple[str, ...],
    quality: str | None = None,
) -> list[Profile]:
    """Live (not merged) profiles in id order, `limit` after the id `after`; with `quality`
    only those with a master-data problem in that field (or any: `ANY_PROBLEM`)."""
    with engine.connect() as conn:
        stmt = sa.select(profiles.c.id).where(profiles.c.merged_into.is_(None))
        order: Any = profiles.c.id
        if quality is not None:
            stmt = stmt.where(_quality_filter(conn.dialect.name, quality))
            if conn.dialect.name == "sqlite":
                # Read the table in its order and sort the few found: walking the id index
                # looked each row up at random (200,000 profiles: 410 against 90 ms).
                order = sa.text("+profiles.id")
        if after:
            stmt = stmt.where(profiles.c.id > after)
        ids = conn.execute(stmt.order_by(order).limit(limit)).scalars().all()
        return [Profile(pid, *_document_and_derived(conn, pid, purposes)) for pid in ids]


def quality_report(engine: Engine, *, examples: int = 3) -> dict[str, Any]:
    """The master-data problems of all live profiles: how many profiles there are and how
    many have a problem, then per field (trait name) and problem how many profiles, most
    first, with the first `examples` of them by id (profile id and the value as it came).
    One pass over the profiles with problems: their lists are read and counted here."""
    if not 0 <= examples <= 20:
        raise InvalidInputError("invalid `examples`: expected 0 to 20", field="examples")
    live = profiles.c.merged_into.is_(None)
    # (field, problem) -> [profiles, the first `examples` (profile id, value) by id]
    groups: dict[tuple[str, str], list[Any]] = {}
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).where(live)).scalar_one()
        found = conn.execute(
            sa.select(profiles.c.id, profiles.c.quality).where(live, sa.text(_HAS_PROBLEMS))
        )
        with_problems = 0
        for pid, problems in found:
            with_problems += 1
            seen = set()
            for q in problems:
                key = (q.get("field", ""), q.get("problem", ""))
                if key in seen:
                    continue
                seen.add(key)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = [0, []]
                group[0] += 1
                shown = group[1]
                if examples and (len(shown) < examples or pid < shown[-1][0]):
                    bisect.insort(shown, (pid, q.get("value")))
                    del shown[examples:]
    ranked = sorted(groups.items(), key=lambda item: (-item[1][0], item[0]))
    return {
        "profiles": total,
        "with_problems": with_problems,
        "problems": [
            {
                "field": field,
                "problem": problem,
                "profiles": count,
                "examples": [{"profile_id": pid, "value": value} for pid, value in shown],
            }
            for (field, problem), (count, shown) in ranked
        ],
    }


def timeline(
    engine: Engine, profile_id: str, *, before_id: int | None, limit: int
) -> tuple[str, list[StoredEvent]]:
    """The profile's events on every id it ever had, newest first: events with one of its
    user ids, events without a user id under one of its anonymous ids unless the processor
    applied them to another profile, and those it applied to this one otherwise
    (`event_attributions`: joined by e-mail or phone on someone else's device)."""
    with engine.connect() as conn:
        found = resolve_profile_id(conn, profile_id)
        if found is None:
            raise NotFoundError(f"no profile `{profile_id[:60]}`")
        keys = conn.execute(
            sa.select(identities.c.key).where(identities.c.profile_id == found)
        ).scalars()
        user_ids, anonymous_ids = [], []
        for key in keys:
            if key.startswith("u:"):
                user_ids.append(key[2:])
            elif key.startswith("a:"):
                anonymous_ids.append(key[2:])
        elsewhere = applied_elsewhere([found])
        # One index range per identifier, newest first (indexes on (user_id, id) and
        # (anonymous_id, id)): the cost follows the customer's own events, whatever the
        # size of the log or the planner's statistics.
        before = [events.c.id < before_id] if before_id is not None else []
        parts = [
            sa.select(events.c.id)
            .where(events.c.user_id == uid, *before)
            .order_by(events.c.id.desc())
            .limit(limit)
            .subquery()
            for uid in user_ids
        ] + [
            sa.select(events.c.id)
            .where(events.c.anonymous_id == aid, events.c.user_id.is_(None), ~elsewhere, *before)
            .order_by(events.c.id.desc())
            .limit(limit)
            .subquery()
            for aid in anonymous_ids
        ]
        attributed = attributed_to([found])
        if before_id is not None:
            attributed = attributed.where(event_attributions.c.event_id < before_id)
        parts.append(
            attributed.order_by(event_attributions.c.event_id.desc()).limit(limit).subquery()
        )
        newest = sa.union_all(*[sa.select(part.c.id) for part in parts]).subquery()
        stmt = (
            sa.select(events, sources.c.name.label("source_name"))
            .join(sources, sources.c.id == events.c.source_id)
            .where(events.c.id.in_(sa.select(newest.c.id)))
        )
        rows = conn.execute(stmt.order_by(events.c.id.desc()).limit(limit)).all()
    return found, [event_from_row(r) for r in rows]


def applied_elsewhere(profile_ids: Collection[str]) -> sa.Exists:
    """In a query over `events`: the event was applied to a profile other than
    `profile_ids` although its anonymous id leads to them (`event_attributions`)."""
    attributed = event_attributions.c
    return sa.exists().where(
        attributed.event_id == events.c.id, attributed.profile_id.not_in(profile_ids)
    )


def attributed_to(profile_ids: Collection[str]) -> sa.Select[tuple[int]]:
    """The ids (`id`) of the events applied to `profile_ids` under another's anonymous id."""
    attributed = event_attributions.c
    return sa.select(attributed.event_id.label("id")).where(attributed.profile_id.in_(profile_ids))


def consent_history(engine: Engine, profile_id: str) -> list[ConsentStatement]:
    with engine.connect() as conn:
        found = resolve_profile_id(conn, profile_id)
        if found is None:
            raise NotFoundError(f"no profile `{profile_id[:60]}`")
        rows = conn.execute(
            sa.select(consent_changes)
            .where(consent_changes.c.profile_id == found)
            .order_by(consent_changes.c.at, consent_changes.c.id)
        ).all()
    return [ConsentStatement(r.purpose, r.granted, r.at, r.source, r.event_id) for r in rows]

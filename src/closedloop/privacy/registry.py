"""Every table of the store, classified: which hold personal data, and how each is erased and
exported for one person.

`REGISTRY` names every table; a test fails when the store has a table that is not in it, or
a personal-data table without both handlers. A handler works on a `Subject`, the person's
identity cluster (her surviving profile, the profiles merged into it, every identifier they
hold), inside the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from closedloop.access._tables import admin_tokens, ui_sessions, users
from closedloop.feeds._tables import feed_rows, feed_runs, feeds
from closedloop.identity._tables import (
    customer_key_changes,
    identities,
    identity_conflicts,
    identity_merges,
    suppressions,
)
from closedloop.ingest._tables import events, failed_events, sources
from closedloop.mood._tables import mood_basis, mood_rules
from closedloop.privacy._tables import privacy_audit, privacy_erasures
from closedloop.profiles._tables import (
    consent_changes,
    event_attributions,
    event_tallies,
    processor_cursors,
    profile_writes,
    profiles,
)
from closedloop.profiles.read import applied_elsewhere, attributed_to
from closedloop.segments._tables import (
    mood_sizes,
    segment_changes,
    segment_changes_by_profile,
    segment_members,
    segment_sizes,
    segments,
)
from closedloop.segments.compile import escape_like
from closedloop.segments.history import changes_of
from closedloop.segments.store import forget_members
from closedloop.surveys._tables import (
    survey_answers,
    survey_decisions,
    survey_invitations,
    surveys,
)

__all__ = ["REGISTRY", "Entry", "Subject", "subject_of"]

_CHUNK = 500
_CONTACT_TRAITS = ("email", "phone", "mobile", "mobile_phone", "phone_number")


@dataclass(frozen=True)
class Subject:
    """One person as the store knows her: her profiles and every identifier they hold."""

    profile_ids: tuple[str, ...]
    keys: tuple[str, ...]  # identity keys: `u:`, `a:`, `e:`, `p:`
    customer_keys: tuple[str, ...]
    contact_values: tuple[str, ...]  # e-mail and phone as stored and as sent (free-text search)

    def ids(self, prefix: str) -> list[str]:
        return sorted({k[2:] for k in self.keys if k.startswith(prefix)})


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    values = sorted(set(values))
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def subject_of(conn: sa.Connection, profile_ids: Sequence[str]) -> Subject:
    """The whole cluster of `profile_ids`: their survivors and everything merged into them."""
    p = profiles.c
    survivors: set[str] = set()
    for chunk in _chunks(profile_ids):
        for pid, merged_into in conn.execute(sa.select(p.id, p.merged_into).where(p.id.in_(chunk))):
            survivors.add(merged_into or pid)
    members: dict[str, Any] = {}
    for chunk in _chunks(list(survivors)):
        stmt = sa.select(p.id, p.customer_key, p.traits, p.masterdata).where(
            sa.or_(p.id.in_(chunk), p.merged_into.in_(chunk))
        )
        for member in conn.execute(stmt):
            members[member.id] = member
    ids = sorted(members)
    keys: set[str] = set()
    customer_keys = {row.customer_key for row in members.values() if row.customer_key}
    contact: set[str] = set()
    for chunk in _chunks(ids):
        keys.update(
            conn.execute(sa.select(identities.c.key).where(identities.c.profile_id.in_(chunk)))
            .scalars()
            .all()
        )
        for old, new in conn.execute(
            sa.select(customer_key_changes.c.old_key, customer_key_changes.c.new_key).where(
                customer_key_changes.c.profile_id.in_(chunk)
            )
        ):
            customer_keys.update((old, new))
    for row in members.values():
        for name, value in (row.traits or {}).items():
            first = value[0] if isinstance(value, list) and value else None
            if name.lower() in _CONTACT_TRAITS and isinstance(first, str | int):
                contact.add(str(first))
        for name in ("email", "phone"):
            found = (row.masterdata or {}).get(name)
            if isinstance(found, str):
                contact.add(found)
    contact.update(k[2:] for k in keys if k[:2] in ("e:", "p:"))
    return Subject(
        profile_ids=tuple(ids),
        keys=tuple(sorted(keys)),
        customer_keys=tuple(sorted(customer_keys)),
        contact_values=tuple(sorted(v for v in contact if len(v) >= 5)),
    )


Handler = Callable[[sa.Connection, Subject], int]
Exporter = Callable[[sa.Connection, Subject], list[dict[str, Any]]]


@dataclass(frozen=True)
class Entry:
    """A table: whether it holds personal data, why (or why not), and its handlers."""

    table: sa.Table
    personal: bool
    note: str
    erase: Handler | None = None
    export: Exporter | None = None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _rows(conn: sa.Connection, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row._mapping.items()} for row in conn.execute(stmt)]


def _where_profiles(table: sa.Table, *columns: str) -> Callable[[list[str]], Any]:
    return lambda chunk: sa.or_(*[table.c[c].in_(chunk) for c in columns])


def _by_profile(table: sa.Table, *columns: str) -> tuple[Handler, Exporter]:
    """Handlers for a table whose rows belong to the profiles named in `columns`."""
    where = _where_profiles(table, *(columns or ("profile_id",)))

    def erase(conn: sa.Connection, subject: Subject) -> int:
        return sum(
            conn.execute(table.delete().where(where(chunk))).rowcount
            for chunk in _chunks(subject.profile_ids)
        )

    def export(conn: sa.Connection, subject: Subject) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for chunk in _chunks(subject.profile_ids):
            found += _rows(conn, sa.select(table).where(where(chunk)))
        return found

    return erase, export


def _event_conditions(subject: Subject) -> Iterator[Any]:
    """Her events (the profile timeline's rule): those under one of her user ids, anonymous
    ones under her anonymous ids unless the processor applied them to someone else, and
    those it applied to her under another's anonymous id (`event_attributions`)."""
    for chunk in _chunks(subject.ids("u:")):
        yield events.c.user_id.in_(chunk)
    elsewhere = applied_elsewhere(subject.profile_ids)
    for chunk in _chunks(subject.ids("a:")):
        yield sa.and_(events.c.anonymous_id.in_(chunk), events.c.user_id.is_(None), ~elsewhere)
    for chunk in _chunks(subject.profile_ids):
        yield events.c.id.in_(attributed_to(chunk))


def _erase_events(conn: sa.Connection, subject: Subject) -> int:
    return sum(conn.execute(events.delete().where(c)).rowcount for c in _event_conditions(subject))


def _export_events(conn: sa.Connection, subject: Subject) -> list[dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for condition in _event_conditions(subject):
        for row in _rows(conn, sa.select(events).where(condition)):
            found[row["id"]] = row
    return [found[i] for i in sorted(found)]


def _failed_conditions(subject: Subject) -> list[Any]:
    """Failed events keep the message as JSON text: look for her ids under their field names
    and her e-mail and phone (as sent or normalised) as JSON strings, ignoring case."""
    payload = sa.func.lower(failed_events.c.payload)
    patterns: set[str] = set()
    for prefix, fields in (("u:", ("userId", "user_id")), ("a:", ("anonymousId",))):
        for value in subject.ids(prefix):
            text = json.dumps(value, ensure_ascii=False)
            for name in (*fields, "previousId"):
                patterns.add(f'"{name.lower()}":{text.lower()}')
    for value in subject.contact_values:
        patterns.add(json.dumps(value, ensure_ascii=False).lower())
    return [payload.like(f"%{escape_like(p)}%", escape="\\") for p in sorted(patterns)]


def _erase_failed(conn: sa.Connection, subject: Subject) -> int:
    conditions = _failed_conditions(subject)
    return sum(
        conn.execute(failed_events.delete().where(sa.or_(*conditions[i : i + 50]))).rowcount
        for i in range(0, len(conditions), 50)
    )


def _export_failed(conn: sa.Connection, subject: Subject) -> list[dict[str, Any]]:
    conditions = _failed_conditions(subject)
    found: dict[int, dict[str, Any]] = {}
    for i in range(0, len(conditions), 50):
        stmt = sa.select(failed_events).where(sa.or_(*conditions[i : i + 50]))
        for row in _rows(conn, stmt):
            found[row["id"]] = row
    return [found[i] for i in sorted(found)]


def _keep_feed_rows(_conn: sa.Connection, _subject: Subject) -> int:
    """Kept on purpose: the next run of each delta feed compares against these rows, finds
    her gone and delivers a delete record for her key (Art. 19); that run's snapshot
    replaces them, so her key leaves the store with it."""
    return 0


_profiles_erase, _profiles_export = _by_profile(profiles, "id", "merged_into")
_merges = _by_profile(identity_merges, "survivor_id", "merged_id")
_conflicts = _by_profile(identity_conflicts, "profile_id", "other_profile_id")
_consent = _by_profile(consent_changes)
_tallies = _by_profile(event_tallies)
_writes = _by_profile(profile_writes)
_members = _by_profile(segment_members)


def _erase_members(conn: sa.Connection, subject: Subject) -> int:
    return forget_members(conn, list(subject.profile_ids))


def _erase_changes(conn: sa.Connection, subject: Subject) -> int:
    """Her segment history, found through the batched index and past its mark (on SQLite,
    `segments.history`); the index's rows go with `segment_changes_by_profile`'s entry."""
    return sum(
        conn.execute(segment_changes.delete().where(changes_of(conn, chunk))).rowcount
        for chunk in _chunks(subject.profile_ids)
    )


def _export_changes(conn: sa.Connection, subject: Subject) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for chunk in _chunks(subject.profile_ids):
        stmt = sa.select(segment_changes).where(changes_of(conn, chunk))
        found += _rows(conn, stmt.order_by(segment_changes.c.id))
    return found


_changes = (_erase_changes, _export_changes)
_changes_by_profile = _by_profile(segment_changes_by_profile)
_feed_rows = _by_profile(feed_rows)
_invitations = _by_profile(survey_invitations)
_decisions = _by_profile(survey_decisions)
_answers = _by_profile(survey_answers)
_key_changes = _by_profile(customer_key_changes)
_identities = _by_profile(identities)
_attributions = _by_profile(event_attributions)

# In erasure order: the event log first, then what was derived from it, identities and
# profiles last (the subject is found through them).
REGISTRY: tuple[Entry, ...] = (
    Entry(events, True, "raw events: ids, traits, properties", _erase_events, _export_events),
    # (after the events: their erasure reads which events are hers)
    Entry(event_attributions, True, "her events under another's anonymous id", *_attributions),
    Entry(failed_events, True, "rejected messages as sent", _erase_failed, _export_failed),
    Entry(survey_answers, True, "NPS score and comment", *_answers),
    Entry(survey_invitations, True, "e-mail address an invitation went to", *_invitations),
    Entry(survey_decisions, True, "why (not) invited, per person", *_decisions),
    Entry(segment_members, True, "segment membership", _erase_members, _members[1]),
    Entry(
        segment_changes, True, "membership history with reasons", _erase_changes, _export_changes
    ),
    Entry(segment_changes_by_profile, True, "which history rows are hers", *_changes_by_profile),
    Entry(feed_rows, True, "customer key a delta feed delivered", _keep_feed_rows, _feed_rows[1]),
    Entry(consent_changes, True, "consent statements", *_consent),
    Entry(event_tallies, True, "how often and when she did each tracked event", *_tallies),
    Entry(profile_writes, True, "which processor batches wrote her profile", *_writes),
    Entry(customer_key_changes, True, "old and new customer keys", *_key_changes),
    Entry(identity_conflicts, True, "refused joins with the identifier", *_conflicts),
    Entry(identity_merges, True, "which profiles joined", *_merges),
    Entry(identities, True, "every identifier of the person", *_identities),
    Entry(profiles, True, "traits, master data, mood, consent", _profiles_erase, _profiles_export),
    Entry(sources, False, "write keys (hashed) of the shop's systems"),
    Entry(admin_tokens, False, "admin tokens (hashed) of operators' tools"),
    Entry(users, False, "staff accounts of the dashboard (no customer data)"),
    Entry(ui_sessions, False, "dashboard sessions (hashed cookie, staff user)"),
    Entry(processor_cursors, False, "positions in the event log"),
    Entry(mood_rules, False, "mood rule definitions"),
    Entry(mood_basis, False, "anchor and half-life of the mood index numbers"),
    Entry(segments, False, "segment definitions"),
    Entry(segment_sizes, False, "segment sizes over time (counts)"),
    Entry(mood_sizes, False, "customers by mood over time (counts)"),
    Entry(feeds, False, "feed definitions"),
    Entry(feed_runs, False, "run records: counts, file names, errors without row values"),
    Entry(surveys, False, "survey definitions"),
    Entry(suppressions, False, "keyed hashes of erased identifiers, irreversible by design"),
    Entry(privacy_erasures, False, "who asked, counts; the cluster only while running"),
    Entry(privacy_audit, False, "who did what, without the personal data"),
)

"""The processor: reads the event log in commit order and keeps identities and profiles.

Each batch writes in one transaction that also moves the cursor (`processor_cursors`), so a
crash rolls both back and the batch is replayed: no event is applied twice or skipped. The
cursor row is the lock: on PostgreSQL `FOR UPDATE SKIP LOCKED` lets one worker at a time
take the next batch (another worker finds it locked and waits for the next turn), so each
profile's events are applied in log order whichever worker runs; pipelined (ADR 0018), a
worker takes it only to write a batch and checks that the cursor is still where the batch
began. On SQLite the batch reads
and applies in a read transaction and takes the file's write lock only for its writes,
checking that the cursor has not moved meanwhile (the ingest's appends need that lock too;
ADR 0002). A batch loads the identities and profiles its events touch in two queries,
applies the events in memory in log order, and writes back only what changed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.identity import customer_key, normalise_email, normalise_phone
from closedloop.identity._tables import identities, identity_conflicts, identity_merges
from closedloop.identity.graph import ConflictReason, EventIds, Rules, Via, resolve
from closedloop.identity.suppression import SuppressionList, message_keys
from closedloop.ingest._tables import events, sources
from closedloop.ingest.log import (
    LogPosition,
    OpenTransaction,
    after_in_log_order,
    committed_after,
    oldest_open_transaction,
    readable_horizon,
)
from closedloop.metrics import Metrics
from closedloop.profiles._tables import (
    MAIN_CURSOR,
    consent_changes,
    event_attributions,
    event_tallies,
    processor_cursors,
    profile_writes,
    profiles,
)
from closedloop.profiles.hooks import ProfileHook, registered
from closedloop.profiles.quality import derive_masterdata, groups_of
from closedloop.profiles.state import (
    COLUMNS_CHANGED_BY_MERGE,
    ConsentChange,
    ProcessedEvent,
    ProfileState,
    apply_event,
    merge_into,
)
from closedloop.profiles.tallies import MAX_TEXT, Known, TallyWriter, facets
from closedloop.runtime import (
    CollectorPause,
    cyclic_gc_paused,
    lower_priority,
    short_switch_interval,
    thread_priority,
)
from closedloop.store import (
    EPOCH,
    appending,
    begin_write,
    fetch_all,
    metadata,
    native_sql,
    to_epoch_us,
)

__all__ = [
    "BatchReport",
    "Lag",
    "ProcessorRunner",
    "hold_derived_state",
    "lag",
    "process_available",
    "process_batch",
    "process_through",
    "rebuild",
]

_log = logging.getLogger(__name__)
_CHUNK = 900  # keys per IN list
_ONE_US = timedelta(microseconds=1)
_CHANNELS = frozenset({"web", "app", "pos", "email", "callcenter"})


@dataclass(frozen=True)
class BatchReport:
    events: int
    profiles_changed: int
    position: LogPosition
    suppressed: int = 0


@dataclass(frozen=True)
class Lag:
    """The committed events the processor has not applied: how many, the age of the oldest
    (by `receivedAt`), and where the processor stands. `held` counts those it cannot read
    yet (PostgreSQL): a transaction older than theirs is still open somewhere in the
    database cluster, and may still commit an event before them in the log's order;
    `holder` is the oldest such transaction, where the store's user may see it (read only
    while events are held)."""

    events: int
    oldest_seconds: float
    position: LogPosition
    held: int = 0
    holder: OpenTransaction | None = None

    @property
    def held_seconds(self) -> float:
        """How long the transaction holding events back has been open (0 when none is)."""
        since = self.holder.since if self.holder is not None else None
        return max(0.0, (clock.now() - since).total_seconds()) if since is not None else 0.0


def profile_id_for(event_id: int) -> str:
    """A new profile's id, derived from the event that created it (so a rebuild repeats it)."""
    digest = hashlib.blake2b(b"closedloop-profile:%d" % event_id, digest_size=12)
    return "p_" + digest.hexdigest()


def _parse(raw: str | bytes) -> dict[str, Any]:
    """An event's stored payload; an empty one where it is not a JSON object."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return payload if payload.__class__ is dict else {}


def _us(value: Any) -> int:
    return value if isinstance(value, int) else to_epoch_us(value)


def _time(us: int) -> datetime:
    return EPOCH + us * _ONE_US


class _Normaliser:
    """E-mail and phone as identifiers (both normalisers memoise: addresses recur)."""

    def __init__(self, region: str) -> None:
        self.region = region

    def email(self, value: object) -> str | None:
        return normalise_email(value).value if isinstance(value, str) and value else None

    def phone(self, value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            return None
        return normalise_phone(value, region=self.region).value


def _event_ids(
    kind: str,
    user_id: str | None,
    anonymous_id: str | None,
    payload: dict[str, Any] | None,
    norm: _Normaliser,
    wanted: set[str],
) -> EventIds | None:
    """The event's identifiers (their keys added to `wanted`); None for the common simple
    case, an event with nothing but its user id and/or anonymous id (always so where its
    payload was not parsed: it names no traits)."""
    if user_id:
        wanted.add("u:" + user_id)
    if anonymous_id:
        wanted.add("a:" + anonymous_id)
    if payload is None:
        return None
    context = payload.get("context")
    context_traits = context.get("traits") if context.__class__ is dict else None
    if kind not in _IDENTIFYING and not context_traits:
        return None
    traits = payload.get("traits") if kind == "identify" else None
    email = phone = None
    for found in (traits, context_traits):
        if isinstance(found, dict):
            email = email or norm.email(found.get("email"))
            phone = phone or norm.phone(found.get("phone"))
    previous = payload.get("previousId") if kind == "alias" else None
    previous_id = str(previous) if previous not in (None, "") else None
    if email:
        wanted.add("e:" + email)
    if phone:
        wanted.add("p:" + phone)
    if previous_id:
        wanted.update(("u:" + previous_id, "a:" + previous_id))
    return EventIds(
        user_id=user_id or None,
        anonymous_id=anonymous_id or None,
        email=email,
        phone=phone,
        previous_id=previous_id,
    )


_IDENTIFYING = frozenset(("identify", "alias"))
_REUSED_SHARE = 10  # keep states when at least 1 in this many profiles was met the batch before


class _Cache:
    """Identities and profile states kept between batches, valid while no one else has
    processed: the cursor's `seq` must still be the one this processor wrote last."""

    MAX_KEYS = 400_000
    MAX_STATES = 100_000

    def __init__(self) -> None:
        self.owners: dict[str, str | None] = {}
        self.states: dict[str, ProfileState] = {}
        self.redirect: dict[str, str] = {}
        # Every tally row of the profiles the batches wrote (`TallyWriter.statements`).
        self.tallies: Known = {}
        self.seq: int | None = None

    def clear(self) -> None:
        self.owners, self.states, self.redirect, self.seq = {}, {}, {}, None
        self.tallies = {}

    def keep_only(self, touched: Collection[str]) -> None:
        """Forget all but what the batch that touched the profiles `touched` wrote, which
        the store may not have yet (the pipeline's next batch is built while it commits):
        their states, the identities that lead to them, their tally rows, the merges. The
        rest is read from the store again when met."""
        self.states = {pid: p for pid, p in self.states.items() if pid in touched}
        self.owners = {k: pid for k, pid in self.owners.items() if pid in touched}
        self.tallies = {pid: rows for pid, rows in self.tallies.items() if pid in touched}
        self.redirect = {merged: to for merged, to in self.redirect.items() if merged in touched}


class _Batch:
    """The working set of one batch: implements `identity.graph.WorkingSet`."""

    def __init__(self, cache: _Cache) -> None:
        self.owners = cache.owners
        self.profiles = cache.states
        self.redirect = cache.redirect
        self.touched: dict[str, ProfileState] = {}
        self.new_identities: dict[str, tuple[str, int, int]] = {}  # key -> (pid, at, event)
        self.moves: list[tuple[str, str]] = []
        self.tallies: dict[tuple[str, str, str], list[int]] = {}  # (pid, event, facet)
        self.merges: list[tuple[str, str, str, int, int]] = []  # survivor, merged, via, event, at
        self.conflicts: dict[tuple[str, str, str, str], list[int]] = {}
        self.consent: list[ConsentChange] = []
        self.event: ProcessedEvent | None = None
        self.hooks: list[tuple[ProfileHook, Any]] = []
        # What the batch writes, built before its write transaction (`_Processor._prepare`):
        # statements run in order in it (`_Processor._flush`), and how many profile rows.
        self.writes: list[Callable[[sa.Connection], object]] = []
        self.changed = 0
        self.dropped: list[int] = []  # events of erased people: deleted, never applied
        # Events without a user id applied to a profile other than their anonymous id's
        # (`event_attributions`): event id -> (profile, the anonymous id's key).
        self.strays: dict[int, tuple[str, str]] = {}
        self.overlap = False  # the next batch is applied while this one commits (`_Pipeline`)

    # -- WorkingSet
    def _final(self, profile_id: str) -> str:
        redirect = self.redirect
        while profile_id in redirect:
            profile_id = redirect[profile_id]
        return profile_id

    def owner(self, key: str) -> str | None:
        found = self.owners.get(key)
        if found is None or found not in self.redirect:
            return found
        return self._final(found)

    def node(self, profile_id: str) -> ProfileState:
        return self.profiles[profile_id]

    def new_profile(self) -> str:
        ev = self.event
        assert ev is not None  # noqa: S101 - set by `run` before `resolve`
        pid = profile_id_for(ev.id)
        self.profiles[pid] = self.touched[pid] = ProfileState(
            id=pid,
            created_at=ev.received_at,
            updated_at=ev.received_at,
            created_event_id=ev.id,
            new=True,
            dirty=True,
        )
        return pid

    def attach(self, key: str, profile_id: str) -> None:
        ev = self.event
        assert ev is not None  # noqa: S101
        self.owners[key] = profile_id
        self.new_identities[key] = (profile_id, ev.timestamp, ev.id)
        p = self.profiles[profile_id]
        if key.startswith("u:"):
            p.user_ids = sorted({*p.user_ids, key[2:]})
            p.columns.add("user_ids")
        elif key.startswith("a:"):
            p.anonymous_ids += 1
            p.columns.add("anonymous_ids")
        p.dirty = True
        self.touched[profile_id] = p

    def merge(self, survivor_id: str, merged_id: str, *, via: Via) -> None:
        ev = self.event
        assert ev is not None  # noqa: S101
        survivor, merged = self.profiles[survivor_id], self.profiles[merged_id]
        for hook, context in self.hooks:
            hook.on_merge(context, survivor, merged)
        merge_into(survivor, merged)
        merged.merged_into = survivor_id
        self.touched[survivor_id], self.touched[merged_id] = survivor, merged
        self.redirect[merged_id] = survivor_id
        self.moves.append((merged_id, survivor_id))
        self.merges.append((survivor_id, merged_id, via, ev.id, ev.timestamp))

    def conflict(self, profile_id: str, other_id: str, key: str, *, reason: ConflictReason) -> None:
        ev = self.event
        assert ev is not None  # noqa: S101
        entry = self.conflicts.get((profile_id, other_id, key, reason))
        if entry is None:
            self.conflicts[(profile_id, other_id, key, reason)] = [ev.id, ev.id, 1]
        else:
            entry[1] = ev.id
            entry[2] += 1


# The hot statements, in SQLite's placeholder style: `?` a value, `?j` a JSON document,
# `::t` a JSON column read as text. `_Sql` turns them into each backend's own SQL.
_READ_SQLITE = (  # the payload as its UTF-8 bytes: parsed from them, never made a `str`
    "SELECT id, txid, source_id, type, event, user_id, anonymous_id, timestamp, received_at, "
    "CAST(payload AS BLOB) FROM events WHERE id > ? ORDER BY id LIMIT ?"
)
_READ_POSTGRES = (  # times as epoch microseconds: converted by the server, not in Python
    "SELECT id, txid, source_id, type, event, user_id, anonymous_id, "
    "(extract(epoch FROM timestamp) * 1000000)::bigint, "
    "(extract(epoch FROM received_at) * 1000000)::bigint, payload::t FROM events "
    "WHERE txid < (pg_snapshot_xmin(pg_current_snapshot())::t)::bigint "
    "AND (txid, id) > (?, ?) ORDER BY txid, id LIMIT ?"
)
_IDENTITIES = "SELECT key, profile_id FROM identities WHERE key IN (?*)"
_PROFILES = (
    "SELECT id, user_ids::t, anonymous_ids, traits::t, computed::t, consent::t, created_at, "
    "updated_at, created_event_id, masterdata::t, quality::t, customer_key, derived::t "
    "FROM profiles "
    "WHERE id IN (?*)"
)
_INSERT_PROFILE = (
    "INSERT INTO profiles (id, merged_into, customer_key, user_ids, anonymous_ids, traits, "
    "computed, consent, derived, masterdata, quality, created_at, updated_at, created_event_id, "
    "processed_seq) VALUES (?, ?, ?, ?j, ?, ?j, ?j, ?j, ?j, ?j, ?j, ?, ?, ?, ?)"
)
# The columns a profile's update may set besides the counts (`_Sql.update_columns`): a
# fixed list of names, never text from an event.
_SETTABLE = frozenset((*COLUMNS_CHANGED_BY_MERGE, "masterdata", "quality", "customer_key"))
_INSERT_IDENTITY = (
    "INSERT INTO identities (key, profile_id, first_seen_at, event_id) VALUES (?, ?, ?, ?)"
)
_INSERT_MERGE = (
    "INSERT INTO identity_merges (survivor_id, merged_id, via, event_id, at) VALUES (?, ?, ?, ?, ?)"
)
# A conflict seen again is counted (one row per pair, identifier and reason).
_UPSERT_CONFLICT = (
    "INSERT INTO identity_conflicts (profile_id, other_profile_id, identity_key, reason, "
    "first_event_id, last_event_id, occurrences) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (profile_id, other_profile_id, identity_key, reason) DO UPDATE SET "
    "last_event_id = excluded.last_event_id, "
    "occurrences = identity_conflicts.occurrences + excluded.occurrences"
)
_INSERT_CONSENT = (
    "INSERT INTO consent_changes (profile_id, purpose, granted, at, source, event_id) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_ATTRIBUTION = (
    "INSERT INTO event_attributions (event_id, profile_id) VALUES (?, ?) "
    "ON CONFLICT (event_id) DO UPDATE SET profile_id = excluded.profile_id"
)
# A merge moves the merged profile's identities, merged profiles, consent history and stray
# events onto its survivor: (survivor, merged) pairs.
_MOVES = (
    "UPDATE identities SET profile_id = ? WHERE profile_id = ?",
    "UPDATE profiles SET merged_into = ? WHERE merged_into = ?",
    "UPDATE consent_changes SET profile_id = ? WHERE profile_id = ?",
    "UPDATE event_attributions SET profile_id = ? WHERE profile_id = ?",
)
_INSERT_WRITE = (
    "INSERT INTO profile_writes (seq, profile_id, merged_into, mood_k, mood_last, mood_churn, "
    "nps_score, nps_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


# PostgreSQL: profile rows go in by COPY (new ones straight into the table, changed ones into
# a staging table and then one UPDATE ... FROM per kind of change): one round trip per batch
# instead of one per row.
_COPY_PROFILES = (
    "COPY profiles (id, merged_into, customer_key, user_ids, anonymous_ids, traits, computed, "
    "consent, derived, masterdata, quality, created_at, updated_at, created_event_id, "
    "processed_seq) FROM STDIN"
)
_COPY_IDENTITIES = "COPY identities (key, profile_id, first_seen_at, event_id) FROM STDIN"
_COPY_WRITES = (
    "COPY profile_writes (seq, profile_id, merged_into, mood_k, mood_last, mood_churn, "
    "nps_score, nps_at) FROM STDIN"
)
_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS closedloop_profile_staging (kind smallint, id text, "
    "merged_into text, user_ids jsonb, anonymous_ids integer, traits jsonb, computed jsonb, "
    "consent jsonb, derived jsonb, created_at timestamptz, updated_at timestamptz, "
    "processed_seq bigint, customer_key text, "
    "masterdata jsonb, quality jsonb) ON COMMIT DELETE ROWS"
)
_COPY_STAGING = (
    "COPY closedloop_profile_staging (kind, id, merged_into, user_ids, anonymous_ids, traits, "
    "computed, consent, derived, created_at, updated_at, processed_seq, customer_key, "
    "masterdata, quality) "
    "FROM STDIN"
)
_FROM_STAGING = (
    # kind 0: counts only
    "UPDATE profiles AS p SET computed = s.computed, updated_at = s.updated_at, "
    "processed_seq = s.processed_seq "
    "FROM closedloop_profile_staging AS s WHERE s.kind = 0 AND p.id = s.id",
    # kind 1: identities, consent, trait times; kind 2: also master data
    "UPDATE profiles AS p SET merged_into = s.merged_into, user_ids = s.user_ids, "
    "anonymous_ids = s.anonymous_ids, traits = s.traits, computed = s.computed, "
    "consent = s.consent, derived = s.derived, created_at = s.created_at, "
    "updated_at = s.updated_at, processed_seq = s.processed_seq "
    "FROM closedloop_profile_staging AS s WHERE s.kind = 1 AND p.id = s.id",
    "UPDATE profiles AS p SET merged_into = s.merged_into, user_ids = s.user_ids, "
    "anonymous_ids = s.anonymous_ids, traits = s.traits, computed = s.computed, "
    "consent = s.consent, derived = s.derived, created_at = s.created_at, "
    "updated_at = s.updated_at, processed_seq = s.processed_seq, "
    "customer_key = s.customer_key, masterdata = s.masterdata, quality = s.quality "
    "FROM closedloop_profile_staging AS s WHERE s.kind = 2 AND p.id = s.id",
)


def _statement(statement: str, params: Any) -> Callable[[sa.Connection], object]:
    """A write of the batch: `statement` with its rows (the driver's executemany) or its
    one tuple of values."""
    return lambda conn: conn.exec_driver_sql(statement, params)


def _copy_rows(conn: sa.Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _copy_profiles(
    conn: sa.Connection,
    inserts: list[tuple[Any, ...]],
    updates: list[tuple[Any, ...]],
    updates_traits: list[tuple[Any, ...]],
    counts: list[tuple[Any, ...]],
) -> None:
    if inserts:
        _copy_rows(conn, _COPY_PROFILES, inserts)
    if not (updates or updates_traits or counts):
        return
    staged: list[tuple[Any, ...]] = []
    for computed, updated_at, seq, pid in counts:
        nothing = (None, None, None, None)
        staged.append(
            (0, pid, *nothing, computed, None, None, None, updated_at, seq, None, None, None)
        )
    for row in updates:
        staged.append((1, row[-1], *row[:-1], None, None, None))
    for row in updates_traits:
        staged.append((2, row[-1], *row[:-1]))
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(_STAGING)
        with cursor.copy(_COPY_STAGING) as copy:
            for row in staged:
                copy.write_row(row)
        for kind, statement in enumerate(_FROM_STAGING):
            if (counts, updates, updates_traits)[kind]:
                cursor.execute(statement)
        cursor.execute("TRUNCATE closedloop_profile_staging")


def _over_json(statement: str) -> str:
    """SQLite: `statement`, written for one row of `?` values (`INSERT ... VALUES (...)`,
    with or without `ON CONFLICT`, or `UPDATE ... WHERE`), as one statement over a JSON array
    of such rows bound to its only `?`: `INSERT ... SELECT ... FROM json_each(?)`, `UPDATE
    ... FROM json_each(?)`; an UPDATE's WHERE starts with the table's column. The rows must
    not depend on each other (distinct keys).

    One call into SQLite for all rows, which runs without the GIL: the driver's
    executemany takes the GIL back after every row, and with another thread running Python
    each take waits for that thread's switch interval (5 ms), so a pipelined writer crawled
    (a bench of 2,000 upserts: 10 ms alone, 11 s beside a Python loop; `json_each`: 15 and
    22 ms)."""
    return _rows_over_json(
        statement.split("?"),
        lambda i, table, column: f"j.value ->> {i}",
        "json_each(?)",
    )


def _over_json_pg(statement: str) -> str:
    """PostgreSQL: `statement` (its `%s`, `%s::jsonb` form) as one statement over a JSON
    array of its rows, as `_over_json` does for SQLite: each value is cast to its column's
    type (JSON documents come as their text), and the server parses the array while the
    thread that sent it waits without the GIL (the processor's pipeline, ADR 0018). The
    array is parsed once, as `jsonb`: with `json` each `->>` parsed its row's text again,
    once per column (the demo's writes: 1.34 s a drain as `json`, 1.03 s as `jsonb`)."""
    parts = statement.split("%s")
    parts = [parts[0], *(part.removeprefix("::jsonb") for part in parts[1:])]

    def value(i: int, table: str, column: str) -> str:
        return f"(j.value ->> {i})::{_pg_type(table, column)}"

    return _rows_over_json(parts, value, "jsonb_array_elements(%s::jsonb)")


def _pg_type(table: str, column: str) -> str:
    """The PostgreSQL type of a column of the store's tables (`metadata`)."""
    return str(metadata.tables[table].c[column].type.dialect_impl(_PG).compile(_PG))


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


_ASSIGNED = re.compile(r"(\w+) = $")


def _rows_over_json(parts: list[str], value: Callable[[int, str, str], str], source: str) -> str:
    """The one-row statement split at its placeholders (`parts`) over the array of rows in
    `source` (aliased `j`), each placeholder replaced by `value(i, table, column)`."""
    statement = "?".join(parts)
    count = len(parts) - 1
    if statement.startswith("INSERT"):
        head, rest = statement.split(" VALUES (", 1)
        tail = rest.split(")", 1)[1]
        table = head.split()[2]
        columns = [c.strip() for c in head.split("(", 1)[1].rstrip(")").split(",")]
        values = ", ".join(value(i, table, columns[i]) for i in range(count))
        # `statement` is one of this module's constants; every value stays bound.
        return f"{head} SELECT {values} FROM {source} AS j WHERE true{tail}"  # noqa: S608 # nosec B608
    if not statement.startswith("UPDATE") or statement.count(" WHERE ") != 1:
        raise ValueError(f"not a one-row INSERT or UPDATE: {statement}")
    table = statement.split()[1]  # its column, not the source's
    text = parts[0]
    for i, part in enumerate(parts[1:]):
        assigned = _ASSIGNED.search(text)
        if assigned is None:
            raise ValueError(f"not `column = ?`: {statement}")
        text += value(i, table, assigned.group(1)) + part
    head, where = text.split(" WHERE ")
    return f"{head} FROM {source} AS j WHERE {table}.{where}"


class _Sql:
    """The hot statements in each backend's own SQL, run through the driver's executemany,
    or on SQLite over a JSON array of the rows (`rows`).

    Static text with placeholders only: every value is bound, never spliced in.
    """

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"
        # `->>` came with SQLite 3.38; UPDATE ... FROM with 3.33.
        self.can_json_rows = self.pg or sqlite3.sqlite_version_info >= (3, 38)
        self._json: dict[str, str] = {}
        self.read = self._native(_READ_POSTGRES if self.pg else _READ_SQLITE)
        self.identities = self._native(_IDENTITIES)
        self.profiles = self._native(_PROFILES)
        self.insert_profile = self._native(_INSERT_PROFILE)
        self._update_columns: dict[tuple[str, ...], str] = {}
        self.insert_identity = self._native(_INSERT_IDENTITY)
        self.insert_write = self._native(_INSERT_WRITE)
        self.insert_consent = self._native(_INSERT_CONSENT)
        self.insert_attribution = self._native(_INSERT_ATTRIBUTION)
        self.insert_merge = self._native(_INSERT_MERGE)
        self.upsert_conflict = self._native(_UPSERT_CONFLICT)
        self.moves = tuple(self._native(statement) for statement in _MOVES)
        self.tallies = TallyWriter(self._native, self.in_list)

    def update_columns(self, columns: tuple[str, ...]) -> str:
        """SQLite: the counts and `columns` (names of `ProfileState.columns`, or master data)
        set by id; each statement built once."""
        found = self._update_columns.get(columns)
        if found is None:
            if not _SETTABLE.issuperset(columns):
                raise ValueError(f"not a settable profile column: {columns}")
            assignments = "".join(f", {column} = ?" for column in columns)
            statement = (  # column names from `_SETTABLE` only; every value bound
                "UPDATE profiles SET computed = ?j, updated_at = ?, "  # noqa: S608 # nosec B608
                f"processed_seq = ?{assignments} WHERE id = ?"
            )
            found = self._update_columns[columns] = self._native(statement)
        return found

    def _native(self, statement: str) -> str:
        return native_sql(statement, pg=self.pg)

    def rows(
        self, statement: str, rows: list[tuple[Any, ...]], *, as_json: bool
    ) -> Callable[[sa.Connection], object]:
        """A write of `rows` of the one-row `statement` (distinct keys): the driver's
        executemany, or with `as_json` (where SQLite can) one statement over the rows as
        JSON (`_over_json`), serialised here, in the thread that builds the batch. Alone,
        the executemany is the faster (1M profiles: 12,575 against 10,027 updates/s)."""
        if not (as_json and self.can_json_rows):
            return _statement(statement, rows)
        found = self._json.get(statement)
        if found is None:
            found = self._json[statement] = (_over_json_pg if self.pg else _over_json)(statement)
        return _statement(found, (orjson.dumps(rows).decode(),))

    def in_list(self, statement: str, count: int) -> str:
        """`statement` with its `?*` (or `%s*`) widened to `count` placeholders."""
        one = "%s" if self.pg else "?"
        return statement.replace(one + "*", ", ".join([one] * count))

    def time(self, us: int) -> Any:
        return _time(us) if self.pg else us


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _written_numbers(derived: dict[str, Any]) -> tuple[Any, ...]:
    """The numbers of `derived` a `profile_writes` row carries (`WRITTEN_NUMBERS`)."""
    nps = derived.get("nps") or (None, None)
    return (derived.get("mood_k"), derived.get("mood_last"), derived.get("mood_churn"), *nps)


def _keep_nps(p: ProfileState) -> None:
    """The latest NPS answer's score and time in `derived` too, where the indexes over them
    are (migration 0019): `computed` is written with every event, `derived` only when it
    changes, and an index over a column an `UPDATE` sets is rewritten."""
    nps = p.computed.get("nps")
    want = nps[:2] if nps else None
    if p.derived.get("nps") != want:
        if want is None:
            del p.derived["nps"]
        else:
            p.derived["nps"] = want
        p.columns.add("derived")


class _Processor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.norm = _Normaliser(settings.identity.default_region)
        self.rules = Rules(
            merge_on_email=settings.identity.merge_on_email,
            merge_on_phone=settings.identity.merge_on_phone,
            max_anonymous_ids=settings.identity.max_anonymous_ids,
        )
        self.purposes = {p.lower(): p for p in settings.profiles.consent_purposes}
        secret = settings.identity.customer_key_secret or settings.secret_key
        self.key_secret = secret.get_secret_value().encode() if secret else b""
        self.cache = _Cache()
        self._previous: set[str] | None = None  # the profiles the batch before wrote
        self.sql: _Sql | None = None
        self.seq = 0  # the batch's sequence number, stamped on every profile it writes
        self.pipelined = False  # set by `_Pipeline` while it drains
        self.suppression = SuppressionList(settings, refresh_seconds=0)
        # The master data of a profile without traits, and its JSON (`_masterdata`).
        self._no_traits: tuple[dict[str, Any], list[dict[str, str]], str, str] | None = None

    def customer_key(self, email: str | None) -> str | None:
        if not email or not self.key_secret:
            return None
        return customer_key(
            email, secret=self.key_secret, version=self.settings.identity.customer_key_version
        )

    def read(self, conn: sa.Connection, after: LogPosition, limit: int) -> list[Any]:
        if self.sql is None:
            self.sql = _Sql(conn.dialect.name)
        params = (after.txid, after.id, limit) if self.sql.pg else (after.id, limit)
        return fetch_all(conn, self.sql.read, params)

    def run(self, conn: sa.Connection, rows: list[Any]) -> _Batch:
        """Apply `rows` to the states in memory and build what the batch writes: reads
        only (on SQLite outside the write lock, `_process_batch`)."""
        batch = _Batch(self.cache)
        batch.hooks = hooks = [(h, h.prepare(conn, self.settings)) for h in registered()]
        channels = {
            r.id: (r.name, r.kind)
            for r in conn.execute(sa.select(sources.c.id, sources.c.name, sources.c.kind))
        }
        prepared: list[tuple[Any, dict[str, Any] | None, EventIds | None]] = []
        wanted: set[str] = set()
        norm = self.norm
        suppression = self.suppression
        suppression.refresh(conn)
        dropped = batch.dropped
        region = self.settings.identity.default_region
        # An event whose payload names no traits (most: pages, screens, tracks) is known by
        # its user and anonymous id alone; its payload is parsed when it is applied, while
        # its objects are fresh in the CPU's cache (parsed here, a batch's payloads had
        # left it by then: a demo drain took 6 % longer; ADR 0002). Payloads are stored as
        # `orjson` (PostgreSQL: `jsonb`) writes them, keys never escaped.
        needle = '"traits"' if conn.dialect.name == "postgresql" else b'"traits"'
        for row in rows:
            payload = None
            if not suppression.empty or row[3] in _IDENTIFYING or needle in row[9]:
                payload = _parse(row[9])
                if not suppression.empty and suppression.suppressed(
                    message_keys(row[3], row[5], row[6], payload, region=region)
                ):
                    dropped.append(row[0])  # an erased person's event: never applied, not kept
                    continue
            ids = _event_ids(row[3], row[5], row[6], payload, norm, wanted)
            prepared.append((row, payload, ids))
        self._load(conn, wanted)
        if conn.dialect.name == "sqlite":
            # SQLite: end the read transaction while the events are applied in memory (the
            # tallies are read in a new one). A reader keeps the WAL from being reset by a
            # checkpoint; a pipeline that always held one grew it without end.
            conn.commit()
        max_traits = self.settings.profiles.max_traits
        purposes = self.purposes
        rules = self.rules
        owner = batch.owner
        states = batch.profiles
        touched = batch.touched
        consent = batch.consent
        tallies = batch.tallies
        for row, parsed, ids in prepared:
            payload = _parse(row[9]) if parsed is None else parsed
            source, kind = channels.get(row[2], ("unknown", "server"))
            context = payload.get("context")
            if context.__class__ is dict:
                channel = context.get("channel")  # a source relaying several names each one's
                if channel.__class__ is str and channel in _CHANNELS:  # (a list is unhashable)
                    kind = channel
            # id, type, name, timestamp and received_at (epoch microseconds from both
            # backends' read), payload, source, channel: by position (0.16 µs, by keyword
            # 0.41 µs).
            ev = ProcessedEvent(row[0], row[3], row[4], row[7], row[8], payload, source, kind)
            pid = None
            if ids is None:
                # Fast path: an event known by one id, or by two that already agree.
                user_id, anonymous_id = row[5], row[6]
                if user_id:
                    pid = owner("u:" + user_id)
                    if pid is not None and anonymous_id and owner("a:" + anonymous_id) != pid:
                        pid = None  # a new or another profile's anonymous id: the rules decide
                elif anonymous_id:
                    pid = owner("a:" + anonymous_id)
                if pid is None:
                    ids = EventIds(user_id=user_id or None, anonymous_id=anonymous_id or None)
            if pid is None:
                batch.event = ev
                pid = resolve(batch, ids, rules)  # type: ignore[arg-type]
                if not row[5] and row[6] and owner("a:" + row[6]) != pid:
                    batch.strays[row[0]] = (pid, "a:" + row[6])
            p = states[pid]
            touched[pid] = p
            apply_event(p, ev, purposes=purposes, max_traits=max_traits, consent_changes=consent)
            for hook, context in hooks:
                if hook.on_event(context, p, ev):
                    p.columns.add("derived")
            if ev.type == "track" and ev.name and len(ev.name) <= MAX_TEXT:
                for kind in ("", *facets(payload)):
                    times = tallies.get((pid, ev.name, kind))
                    if times is None:
                        tallies[(pid, ev.name, kind)] = [ev.timestamp]
                    else:
                        times.append(ev.timestamp)
        self._prepare(conn, batch)
        return batch

    def _load(self, conn: sa.Connection, keys: set[str]) -> None:
        sql = self.sql
        assert sql is not None  # noqa: S101 - set by `read`
        owners = self.cache.owners
        wanted = sorted(k for k in keys if k not in owners)
        for key in wanted:
            owners[key] = None
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            statement = sql.in_list(sql.identities, len(chunk))
            for key, pid in conn.exec_driver_sql(statement, tuple(chunk)):
                owners[key] = pid
        states = self.cache.states
        # A merged profile is never loaded (its identities lead on to the survivor): on
        # SQLite the merge may still be committing while the next batch reads.
        redirect = self.cache.redirect
        pids = sorted(
            {
                p
                for k in keys
                if (p := owners[k]) is not None and p not in states and p not in redirect
            }
        )
        loads = orjson.loads
        for start in range(0, len(pids), _CHUNK):
            chunk = pids[start : start + _CHUNK]
            statement = sql.in_list(sql.profiles, len(chunk))
            for r in conn.exec_driver_sql(statement, tuple(chunk)):
                states[r[0]] = ProfileState(
                    id=r[0],
                    created_at=_us(r[6]),
                    updated_at=_us(r[7]),
                    created_event_id=r[8],
                    user_ids=loads(r[1]),
                    anonymous_ids=r[2],
                    traits=loads(r[3]),
                    computed=loads(r[4]),
                    consent=loads(r[5]),
                    masterdata=loads(r[9]),
                    quality=loads(r[10]),
                    customer_key=r[11],
                    derived=loads(r[12]),
                )

    def _profile_values(self, p: ProfileState, sql: _Sql) -> list[Any]:
        return [
            p.merged_into,
            _dumps(p.user_ids),
            p.anonymous_ids,
            _dumps(p.traits),
            _dumps(p.computed),
            _dumps(p.consent),
            _dumps(p.derived),
            sql.time(p.created_at),
            sql.time(p.updated_at),
            self.seq,
        ]

    def _masterdata(self, p: ProfileState) -> tuple[str | None, str, str]:
        """Customer key, master data and quality, derived again where traits changed."""
        region = self.settings.identity.default_region
        if not p.traits:  # a visitor who never stated a trait (half the demo's profiles)
            if self._no_traits is None:
                masterdata, quality = derive_masterdata({}, region=region)
                self._no_traits = (masterdata, quality, _dumps(masterdata), _dumps(quality))
            masterdata, quality, masterdata_text, quality_text = self._no_traits
            p.masterdata, p.quality, p.customer_key = dict(masterdata), list(quality), None
            return None, masterdata_text, quality_text
        values = {name: value[0] for name, value in p.traits.items()}
        if p.changed is None or p.new or not p.masterdata:
            groups = None
            masterdata, quality = derive_masterdata(values, region=region)
        else:
            groups = groups_of(p.changed)
            masterdata, quality = derive_masterdata(
                values, region=region, groups=groups, previous=(p.masterdata, p.quality)
            )
        if groups is None or "email" in groups:
            p.customer_key = self.customer_key(masterdata.get("email"))
        p.masterdata, p.quality = masterdata, quality
        return p.customer_key, _dumps(masterdata), _dumps(quality)

    def _changed_columns(
        self, p: ProfileState, sql: _Sql
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """SQLite: the columns besides the counts this batch changed (none: the counts
        alone), and their values (then the id). An UPDATE that sets a column rewrites the
        entry of every index over it, even with the value unchanged: at 1M profiles each is
        a random page written."""
        values: list[Any] = [_dumps(p.computed), sql.time(p.updated_at), self.seq]
        if not p.columns and not p.traits_changed:  # most profiles of a batch: the counts
            return (), (*values, p.id)
        columns = sorted(p.columns)
        for column in columns:
            if column in ("merged_into", "anonymous_ids"):
                values.append(getattr(p, column))
            elif column == "created_at":
                values.append(sql.time(p.created_at))
            else:
                values.append(_dumps(getattr(p, column)))
        if p.traits_changed:
            before = p.customer_key
            key, masterdata, quality = self._masterdata(p)
            columns += ["masterdata", "quality"]
            values += [masterdata, quality]
            if key != before:
                columns.append("customer_key")
                values.append(key)
        values.append(p.id)
        return tuple(columns), tuple(values)

    def _flush(self, conn: sa.Connection, batch: _Batch) -> int:
        """In the batch's write transaction: its writes, in order; the profile rows written."""
        dropped = batch.dropped
        for start in range(0, len(dropped), _CHUNK):
            conn.execute(events.delete().where(events.c.id.in_(dropped[start : start + _CHUNK])))
        for write in batch.writes:
            write(conn)
        return batch.changed

    def _prepare(self, conn: sa.Connection, batch: _Batch) -> None:
        """Build the batch's writes (`batch.writes`): its rows serialised, the stored tallies
        it adds to read through `conn`. Nothing is written here."""
        sql = self.sql
        assert sql is not None  # noqa: S101
        # In a pipeline, the next batch is applied while this one commits, unless the
        # ingest is appending: its appends wait for the write lock, which the writes of an
        # overlapping pipeline hold most of the time.
        batch.overlap = self.pipelined and (sql.pg or not appending(conn.engine))
        rows_of = partial(sql.rows, as_json=batch.overlap)
        # PostgreSQL: COPY where the batch is written in the thread that built it; where it
        # overlaps, JSON-array statements, as on SQLite (ADR 0018).
        copy = sql.pg and not batch.overlap
        out = batch.writes
        inserts, updates, updates_traits, counts = [], [], [], []
        by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}  # SQLite: by SET list
        for p in batch.touched.values():
            if not p.dirty:
                continue
            _keep_nps(p)
            if p.new:
                key, masterdata, quality = self._masterdata(p)
                inserts.append(
                    (
                        p.id,
                        p.merged_into,
                        key,
                        _dumps(p.user_ids),
                        p.anonymous_ids,
                        _dumps(p.traits),
                        _dumps(p.computed),
                        _dumps(p.consent),
                        _dumps(p.derived),
                        masterdata,
                        quality,
                        sql.time(p.created_at),
                        sql.time(p.updated_at),
                        p.created_event_id,
                        self.seq,
                    )
                )
            elif not copy:
                columns, row = self._changed_columns(p, sql)
                by_columns.setdefault(columns, []).append(row)
            elif not p.columns:
                counts.append((_dumps(p.computed), sql.time(p.updated_at), self.seq, p.id))
            elif p.traits_changed:
                values = self._profile_values(p, sql)
                values += [*self._masterdata(p), p.id]
                updates_traits.append(tuple(values))
            else:
                updates.append((*self._profile_values(p, sql), p.id))
        if copy:
            out.append(
                partial(
                    _copy_profiles,
                    inserts=inserts,
                    updates=updates,
                    updates_traits=updates_traits,
                    counts=counts,
                )
            )
        else:
            if inserts:
                out.append(rows_of(sql.insert_profile, inserts))
            for columns, rows in by_columns.items():
                out.append(rows_of(sql.update_columns(columns), rows))
        if batch.moves:
            # Each merged profile's rows straight to its last survivor (a survivor merged
            # later in the batch moves on): the pairs do not depend on each other.
            moves = [(batch._final(merged_id), merged_id) for merged_id, _ in batch.moves]
            out.extend(rows_of(statement, moves) for statement in sql.moves)
        # The written profiles with their numbers, for incremental segment refreshes (in id
        # order: appended at the end of the log's key order).
        logged = [
            (self.seq, pid, p.merged_into, *_written_numbers(p.derived))
            for pid, p in sorted(batch.touched.items())
            if p.dirty
        ]
        if logged and copy:
            out.append(partial(_copy_rows, statement=_COPY_WRITES, rows=logged))
        elif logged:
            out.append(rows_of(sql.insert_write, logged))
        tallies = sql.tallies.statements(
            conn, batch.tallies, batch.moves, batch._final, known=self.cache.tallies
        )
        out.extend(
            rows_of(statement, params)
            if isinstance(params, list)
            else _statement(statement, params)
            for statement, params in tallies
        )
        if batch.new_identities:
            rows = [
                (key, batch._final(pid), sql.time(at), event_id)
                for key, (pid, at, event_id) in batch.new_identities.items()
            ]
            if copy:
                out.append(partial(_copy_rows, statement=_COPY_IDENTITIES, rows=rows))
            else:
                out.append(rows_of(sql.insert_identity, rows))
        # Where the batch's merges joined a stray event's two profiles, its anonymous id
        # leads to it again.
        strays = [
            (event_id, final)
            for event_id, (pid, key) in batch.strays.items()
            if (final := batch._final(pid)) != batch.owner(key)
        ]
        if strays:
            out.append(rows_of(sql.insert_attribution, strays))
        if batch.merges:
            merges = [(*merge[:4], sql.time(merge[4])) for merge in batch.merges]
            out.append(rows_of(sql.insert_merge, merges))
        if batch.conflicts:
            found = [(*key, *seen) for key, seen in batch.conflicts.items()]
            out.append(rows_of(sql.upsert_conflict, found))
        if batch.consent:
            stated = [
                (
                    batch._final(c.profile_id),
                    c.purpose,
                    c.granted,
                    sql.time(c.at),
                    c.source[:100],
                    c.event_id,
                )
                for c in batch.consent
            ]
            out.append(rows_of(sql.insert_consent, stated))
        self._touched = batch.touched
        written = (inserts, updates, updates_traits, counts, *by_columns.values())
        batch.changed = sum(len(rows) for rows in written)

    def built(self, seq: int) -> None:
        """The batch's writes are built (`_prepare`): its states are what the store holds
        once they commit, as the batch `seq`. Called after the commit, or (SQLite's
        pipeline) before it: the next batch then applies its events to these states while
        the writes commit, and a failed commit clears the cache."""
        cache = self.cache
        for pid, p in self._touched.items():
            p.new = p.dirty = p.traits_changed = False
            if p.changed is None or p.changed:
                p.changed = set()
            if p.columns:
                p.columns = set()
            if p.merged_into is not None:
                cache.states.pop(pid, None)
        touched, previous = set(self._touched), self._previous
        cache.seq = seq
        # States are kept for the next batch where batches meet the same customers (their
        # sessions). Where fewer than one in ten of a batch's profiles were in the batch
        # before (updates spread over a million customers), or the cache is full, all but
        # this batch's are dropped: reloading costs less than keeping them (ADR 0002), and
        # what this batch wrote may not be in the store yet (the pipeline, ADR 0017).
        if (
            len(cache.owners) > cache.MAX_KEYS
            or len(cache.states) > cache.MAX_STATES
            or (previous is not None and len(touched & previous) * _REUSED_SHARE < len(touched))
        ):
            cache.keep_only(touched)
        self._touched, self._previous = {}, touched


def _position(conn: sa.Connection, *, lock: bool) -> tuple[LogPosition, int] | None:
    """The cursor (position, batch sequence); None when another worker holds it."""
    cursor = processor_cursors.c
    if lock and conn.dialect.name == "sqlite":
        # Take the write lock before reading the cursor: the batch is serialised.
        conn.execute(
            processor_cursors.update().where(cursor.name == MAIN_CURSOR).values(name=cursor.name)
        )
    stmt = sa.select(cursor.txid, cursor.event_id, cursor.seq).where(cursor.name == MAIN_CURSOR)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return LogPosition(int(row.txid), int(row.event_id)), int(row.seq)


def _pending(engine: Engine) -> bool:
    with engine.connect() as conn:
        found = _position(conn, lock=False)
        if found is None:
            return False
        stmt = committed_after(sa.select(events.c.id), conn.dialect.name, found[0]).limit(1)
        return conn.execute(stmt).first() is not None


def process_batch(
    engine: Engine, settings: Settings, *, limit: int | None = None, _proc: Any = None
) -> BatchReport | None:
    """Process the next batch in one transaction; None when another worker holds the turn."""
    proc: _Processor = _proc or _Processor(settings)
    # A batch makes many small acyclic objects (states, traits): see `cyclic_gc_paused`. The
    # collector resumes once the batch's own objects (its rows, its bookkeeping) are freed,
    # so its first pass scans only what outlives the batch, not everything it made.
    with cyclic_gc_paused():
        report = _process_batch(engine, proc, limit or settings.processor.batch_events)
        if _proc is None:
            proc.cache.clear()  # it ends with this call: freed before the collector resumes
        return report


def _process_batch(engine: Engine, proc: _Processor, size: int) -> BatchReport | None:
    try:
        if engine.dialect.name == "sqlite":
            return _process_batch_sqlite(engine, proc, size)
        with engine.connect() as conn, conn.begin():
            found = _position(conn, lock=True)  # the cursor's row lock: one worker's turn
            if found is None:
                return None
            applied = _apply(conn, proc, found, size)
            if isinstance(applied, BatchReport):
                return applied
            report = _write(conn, proc, *applied, seq=found[1])
    except BaseException:
        proc.cache.clear()  # the states in memory may hold what was rolled back
        raise
    proc.built(found[1] + 1)
    return report


_ATTEMPTS = 3  # SQLite: batches applied again after another writer of derived state won


def _process_batch_sqlite(engine: Engine, proc: _Processor, size: int) -> BatchReport | None:
    """On SQLite the write lock is the whole file's, the ingest's appends included: a batch
    reads and applies its events in a read transaction (a snapshot; no lock) and takes the
    lock only to write what it built. The cursor is read again under the lock: if another
    processor, a rebuild or an erasure wrote meanwhile (each moves it), the work is dropped
    with the states in memory and done again from the stored state."""
    for _attempt in range(_ATTEMPTS):
        with engine.connect() as conn:  # read transactions only (`run` ends the first)
            found = _position(conn, lock=False)
            if found is None:
                return None
            applied = _apply(conn, proc, found, size)
        if isinstance(applied, BatchReport):
            return applied
        report = _write_unless_moved(engine, proc, *applied, found=found)
        if report is None:
            proc.cache.clear()
            continue
        proc.built(found[1] + 1)
        return report
    return None


def _write_unless_moved(
    engine: Engine,
    proc: _Processor,
    rows: list[Any],
    batch: _Batch,
    *,
    found: tuple[LogPosition, int],
) -> BatchReport | None:
    """Under the write lock (PostgreSQL: the cursor's row lock), the batch read after the
    cursor `found`, if the cursor is still there; None (nothing written) where another
    writer moved it or holds it."""
    with begin_write(engine, derived=True) as conn:
        if _position(conn, lock=True) != found:
            return None
        return _write(conn, proc, rows, batch, seq=found[1])


def _apply(
    conn: sa.Connection, proc: _Processor, found: tuple[LogPosition, int], size: int
) -> BatchReport | tuple[list[Any], _Batch]:
    """Read the batch after the cursor `found` and apply it in memory; an empty report when
    there is nothing to read."""
    position, seq = found
    if proc.cache.seq != seq:  # someone else processed (or rebuilt) meanwhile
        proc.cache.clear()
    rows = proc.read(conn, position, size)
    if not rows:
        return BatchReport(0, 0, position)
    proc.seq = seq + 1
    return rows, proc.run(conn, rows)


def _end_of(rows: list[Any]) -> LogPosition:
    """The cursor's position after the batch's events `rows`."""
    last = rows[-1]
    return LogPosition(int(last[1] or 0), int(last[0]))


def _write(
    conn: sa.Connection, proc: _Processor, rows: list[Any], batch: _Batch, *, seq: int
) -> BatchReport:
    """In the batch's write transaction: what it built, and the cursor after its last event
    with the batch's sequence number."""
    changed = proc._flush(conn, batch)
    end = _end_of(rows)
    conn.execute(
        processor_cursors.update()
        .where(processor_cursors.c.name == MAIN_CURSOR)
        .values(txid=end.txid, event_id=end.id, seq=seq + 1, updated_at=clock.now())
    )
    return BatchReport(len(rows), changed, end, len(batch.dropped))


def process_available(
    engine: Engine,
    settings: Settings,
    *,
    limit: int | None = None,
    metrics: Metrics | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Process until no event is left to read (or `stop` is set); answer how many were
    processed here. On PostgreSQL events behind an older open transaction are left for
    later (`process_through` waits for them)."""
    # The collector resumes once the processor is gone: its states die by reference
    # counting first. Resumed while they lived, a young collection walked every object the
    # drain had kept, to free none (a demo drain: 36 to 66 ms of 1.2 to 1.4 s).
    with CollectorPause(_COLLECT_SECONDS) as collector:
        return _drain(
            engine,
            settings,
            _Processor(settings),
            limit=limit,
            metrics=metrics,
            stop=stop,
            collector=collector,
        )


def process_through(
    engine: Engine, settings: Settings, *, limit: int | None = None, timeout: float = 5.0
) -> int:
    """Process until every event committed before this call is applied; answer how many were
    processed here. On PostgreSQL an event cannot be read while a transaction older than its
    own is open anywhere in the database cluster (`committed_after`): such events are waited
    for up to `timeout` seconds, then left to the running processor (`lag` shows them)."""
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
    deadline = time.monotonic() + timeout
    done = process_available(engine, settings, limit=limit)
    while last is not None and _unapplied_through(engine, int(last)):
        if time.monotonic() >= deadline:
            break
        time.sleep(settings.processor.poll_seconds)
        done += process_available(engine, settings, limit=limit)
    return done


def _after_cursor(conn: sa.Connection) -> tuple[LogPosition, sa.ColumnElement[bool]]:
    """The processor's position, and the events after it in the log's order (not applied)."""
    found = _position(conn, lock=False)
    position = found[0] if found else LogPosition()
    return position, after_in_log_order(conn.dialect.name, position)


def _unapplied_through(engine: Engine, last: int) -> bool:
    """Whether an event up to id `last` is still after the cursor (not applied)."""
    with engine.connect() as conn:
        _, after = _after_cursor(conn)
        stmt = sa.select(events.c.id).where(after, events.c.id <= last).limit(1)
        return conn.execute(stmt).first() is not None


def _drain(
    engine: Engine,
    settings: Settings,
    proc: _Processor,
    *,
    limit: int | None = None,
    metrics: Metrics | None = None,
    stop: threading.Event | None = None,
    collector: CollectorPause | None = None,
) -> int:
    """Process until no event is left. The cyclic collector is paused over the drain
    (`collector`, where the caller paused it, or here)."""
    if settings.processor.pipeline:
        return _Pipeline(engine, settings, proc, metrics).drain(limit, stop, collector)
    total = 0
    with _paused(collector) as collector:
        while stop is None or not stop.is_set():
            collector.between()
            started = time.perf_counter()
            report = process_batch(engine, settings, limit=limit, _proc=proc)
            if report is None:  # another worker's turn: wait while there is work left
                if not _wait_for_turn(engine, settings, stop):
                    return total
                continue
            if report.events == 0:
                return total
            _count(metrics, report, started)
            total += report.events
    return total


def _wait_for_turn(engine: Engine, settings: Settings, stop: threading.Event | None) -> bool:
    """Another worker has the turn: wait a poll while events are left; False where none are
    (or `stop` is set)."""
    if (stop is not None and stop.is_set()) or not _pending(engine):
        return False
    _pause(settings.processor.poll_seconds, stop)
    return True


def _pause(seconds: float, stop: threading.Event | None) -> None:
    if stop is None:
        time.sleep(seconds)
    else:
        stop.wait(seconds)


def _count(metrics: Metrics | None, report: BatchReport, started: float) -> None:
    """A committed batch in `/metrics` (`started`: when its work began, perf_counter)."""
    if metrics is not None:
        metrics.processed_events.inc(report.events)
        if report.suppressed:
            metrics.suppressed_events.labels("processor").inc(report.suppressed)
        metrics.process_seconds.observe(time.perf_counter() - started)


_SWITCH_INTERVAL = 0.0002  # seconds (`short_switch_interval`)
_COLLECT_SECONDS = 10.0  # a drain's young collections (`CollectorPause`)
_SERVER_NICE = 10  # the embedded processor's threads (`lower_priority`)


def _paused(collector: CollectorPause | None) -> AbstractContextManager[CollectorPause]:
    """The caller's pause of the cyclic collector, or one of the drain's own."""
    return nullcontext(collector) if collector is not None else CollectorPause(_COLLECT_SECONDS)


class _Pipeline:
    """A batch's writes commit in a thread of their own while the next batch is read and
    applied (ADR 0017; PostgreSQL: ADR 0018). SQLite, and a thread that waits for
    PostgreSQL, work without the GIL, and the writes go as one statement per table over a
    JSON array (`_over_json`, `_over_json_pg`), so the two overlap; the batches
    still commit one after the other, each with its cursor, and each writer checks that the
    cursor is where the batch before left it.

    The next batch applies its events to the states in memory, which always hold the
    batch before; what it reads from the store is what that batch did not touch (its
    identities, profiles and tally rows are cached: where batches meet other customers
    each time, all but the last batch's are dropped, `_Cache.keep_only`). While the ingest
    appends (SQLite), each batch waits for the commit before it reads, and is written by the
    driver's executemany. Where a commit fails or finds the cursor moved (another writer),
    the batch built on it is dropped with the cache and built again from the store."""

    def __init__(
        self, engine: Engine, settings: Settings, proc: _Processor, metrics: Metrics | None
    ) -> None:
        self.engine, self.settings, self.proc, self.metrics = engine, settings, proc, metrics
        self.total = 0  # events processed
        self.changed = 0  # profile rows written

    def drain(
        self,
        limit: int | None,
        stop: threading.Event | None,
        collector: CollectorPause | None = None,
    ) -> int:
        while True:
            with _drain_turn(self.engine) as mine:
                if mine:
                    self.proc.pipelined = True
                    try:
                        return self._drain(limit, stop, collector)
                    finally:
                        self.proc.pipelined = False
            # Another worker drains, as a batch that finds the cursor locked (`_drain`).
            if not _wait_for_turn(self.engine, self.settings, stop):
                return 0

    def _drain(
        self, limit: int | None, stop: threading.Event | None, paused: CollectorPause | None
    ) -> int:
        size = limit or self.settings.processor.batch_events
        proc = self.proc
        found: tuple[LogPosition, int] | None = None
        writing: tuple[concurrent.futures.Future[BatchReport | None], float] | None = None
        overlap = False
        with (
            short_switch_interval(_SWITCH_INTERVAL),
            concurrent.futures.ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="closedloop-writer",
                initializer=lower_priority,
                initargs=(thread_priority(),),  # as the thread that drains
            ) as writer,
            _paused(paused) as collector,
        ):
            try:
                while stop is None or not stop.is_set():
                    collector.between()
                    started = time.perf_counter()
                    if writing is not None and not overlap:
                        self._settle(writing)  # the store first
                        writing = None
                    if writing is None:
                        found = None  # read from the store
                    applied: BatchReport | tuple[list[Any], _Batch] | None = None
                    with self.engine.connect() as conn:  # reads (`run` ends the first)
                        if found is None:
                            found = _position(conn, lock=False)
                        if found is not None:
                            applied = _apply(conn, proc, found, size)
                    if writing is not None:
                        committed = self._settle(writing)
                        writing = None
                        if not committed:  # the batch before did not: again
                            # Another worker's turn (PostgreSQL's workers race for the
                            # cursor): let it go on for a while before building again.
                            _pause(self.settings.processor.poll_seconds, stop)
                            found = None
                            continue
                    if applied is None or isinstance(applied, BatchReport):
                        return self.total
                    rows, batch = applied
                    assert found is not None  # noqa: S101
                    proc.built(found[1] + 1)
                    task = writer.submit(
                        _write_unless_moved, self.engine, proc, rows, batch, found=found
                    )
                    writing, overlap = (task, started), batch.overlap
                    found = (_end_of(rows), found[1] + 1)
            finally:
                if writing is not None:
                    self._settle(writing)
        return self.total

    def _settle(self, writing: tuple[concurrent.futures.Future[BatchReport | None], float]) -> bool:
        """Wait for the batch being written: whether it committed. Where it did not (the
        cursor had moved) or failed (raised here), the states built on it are dropped."""
        task, started = writing
        try:
            report = task.result()
        except BaseException:
            self.proc.cache.clear()
            raise
        if report is None:
            self.proc.cache.clear()
            return False
        self.total += report.events
        self.changed += report.profiles_changed
        _count(self.metrics, report, started)
        return True


# PostgreSQL: the pipelined drain's turn, a session advisory lock keyed by the cursor
# table's oid (one per store, even with several stores in one database).
_TURN_KEY = "'processor_cursors'::regclass::oid::bigint"
_TAKE_TURN = f"SELECT pg_try_advisory_lock({_TURN_KEY})"
_END_TURN = f"SELECT pg_advisory_unlock({_TURN_KEY})"


@contextmanager
def _drain_turn(engine: Engine) -> Iterator[bool]:
    """Whether this worker has the pipelined drain's turn. PostgreSQL: one worker at a time
    drains (ADR 0018); the others wait instead of building batches whose writes would find
    the cursor moved, and whose brief hold of the cursor's row lock made the draining
    worker's writes find it taken. The lock is the session's, held on a connection of its
    own for the drain and gone with it if the worker dies. SQLite: always (its writers meet
    at the file's lock)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        mine = bool(conn.exec_driver_sql(_TAKE_TURN).scalar())
        conn.commit()  # a session lock: no transaction held open over the drain
        try:
            yield mine
        finally:
            if mine:
                conn.exec_driver_sql(_END_TURN)
                conn.commit()


def rebuild(engine: Engine, settings: Settings, *, limit: int | None = None) -> int:
    """Forget every derived identity and profile and process the whole log again; answer
    how many events of the log the rebuilt state holds.

    The answer counts the events up to the cursor, whoever processed them: on PostgreSQL a
    worker that was draining finds the cursor moved and goes on from the start of the log
    (ADR 0018), while the rebuild waits for its turn until nothing is left. Events behind an
    older open transaction (PostgreSQL) are waited for a while (`process_through`), then
    left to the running processor."""
    with engine.begin() as conn:
        while (found := _position(conn, lock=True)) is None:  # another worker's batch
            time.sleep(settings.processor.poll_seconds)
        for table in (
            identities,
            identity_merges,
            identity_conflicts,
            consent_changes,
            event_attributions,
            event_tallies,
            profile_writes,
            profiles,
        ):
            conn.execute(table.delete())
        conn.execute(
            processor_cursors.update()
            .where(processor_cursors.c.name == MAIN_CURSOR)
            .values(txid=0, event_id=0, seq=found[1] + 1, updated_at=clock.now())
        )
    process_through(engine, settings, limit=limit)
    return _processed_count(engine)


def _processed_count(engine: Engine) -> int:
    """The events of the log at or before the cursor, in the log's order."""
    with engine.connect() as conn:
        found = _position(conn, lock=False)
        if found is None:
            return 0
        after = after_in_log_order(conn.dialect.name, found[0])
        count = sa.select(sa.func.count()).select_from(events).where(sa.not_(after))
        return int(conn.execute(count).scalar_one())


def hold_derived_state(conn: sa.Connection, settings: Settings) -> None:
    """In `conn`'s transaction: wait for a running batch, hold the cursor until commit, and
    bump its sequence so every processor drops the states it keeps in memory. For changes
    to identities and profiles made outside the processor (erasure, key rotation)."""
    while (found := _position(conn, lock=True)) is None:  # another worker's batch
        time.sleep(settings.processor.poll_seconds)
    conn.execute(
        processor_cursors.update()
        .where(processor_cursors.c.name == MAIN_CURSOR)
        .values(seq=found[1] + 1, updated_at=clock.now())
    )


def lag(engine: Engine) -> Lag:
    """The committed events not processed yet (`Lag`): those after the cursor in the log's
    order, whether the processor can read them yet or waits for an older transaction."""
    with engine.connect() as conn:
        position, after = _after_cursor(conn)
        pg = conn.dialect.name == "postgresql"
        # Counted over the log's index alone; the horizon is read once (an init plan).
        columns: list[Any] = [sa.func.count()]
        if pg:
            horizon = sa.select(readable_horizon()).scalar_subquery()
            columns.append(sa.func.count().filter(events.c.txid >= horizon))
        count, *held = conn.execute(sa.select(*columns).select_from(events).where(after)).one()
        order = (events.c.txid, events.c.id) if pg else (events.c.id,)
        oldest = conn.execute(
            sa.select(events.c.received_at).where(after).order_by(*order).limit(1)
        ).scalar()
        waiting = int(held[0]) if held else 0
        holder = oldest_open_transaction(conn) if waiting else None
    age = max(0.0, (clock.now() - oldest).total_seconds()) if oldest is not None else 0.0
    return Lag(int(count), age, position, waiting, holder)


class ProcessorRunner:
    """The processor in a thread of its own (inside `closedloop serve`)."""

    def __init__(self, engine: Engine, settings: Settings, metrics: Metrics | None = None) -> None:
        self._engine = engine
        self._settings = settings
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="closedloop-processor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        lower_priority(_SERVER_NICE)  # the API's requests first (ADR 0017)
        proc = _Processor(self._settings)
        poll = self._settings.processor.poll_seconds
        while not self._stop.is_set():
            try:
                # The probe is a read: an idle processor never takes SQLite's write lock.
                if _pending(self._engine):
                    _drain(
                        self._engine, self._settings, proc, metrics=self._metrics, stop=self._stop
                    )
            except Exception:  # noqa: BLE001 - keep processing; the lag metric shows a stall
                _log.exception("processor: batch failed; retrying")
                self._stop.wait(min(5.0, poll * 20))
                continue
            self._stop.wait(poll)

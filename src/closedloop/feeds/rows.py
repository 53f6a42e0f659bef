"""A feed's rows: the profiles its source selects, in profile-id order, as cells.

The query streams (`yield_per`), so a feed of a million customers runs in flat memory. Only
the profile columns the feed's columns need are read. A customer without consent for the
feed's purpose, or without a value for the feed's key, is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import islice, repeat
from operator import attrgetter, itemgetter
from typing import Any, cast

import msgspec
import orjson
import sqlalchemy as sa

from closedloop.config import Settings
from closedloop.feeds._tables import feed_runs
from closedloop.feeds.definition import Column, FeedDefinition
from closedloop.identity._tables import customer_key_changes
from closedloop.identity.normalise import normalise_phone
from closedloop.mood import summary as mood_summary
from closedloop.profiles._tables import profiles
from closedloop.profiles.masterdata import normalise_gender, normalise_postal_code
from closedloop.segments import condition_tree, condition_where, consent_granted
from closedloop.segments._tables import segment_members
from closedloop.store import EPOCH, is_postgres

__all__ = [
    "Bounds",
    "FeedRow",
    "RowStats",
    "chunked_rows",
    "column_names",
    "feed_columns",
    "feed_rows",
]

_YIELD = 2000
_FIRST, _SECOND, _FOURTH = itemgetter(0), itemgetter(1), itemgetter(3)
_SALUTATIONS = {
    "de": {"female": "Frau", "male": "Herr"},
    "en": {"female": "Ms", "male": "Mr"},
}
# A range of profile ids (byte order): after the first (none: from the start), up to and
# with the second (none: to the end).
Bounds = tuple[str | None, str | None]


@dataclass(slots=True)
class FeedRow:
    profile_id: str
    key: str
    cells: list[Any]


@dataclass
class RowStats:
    """What the rows left out or changed, for the run log."""

    selected: int = 0
    no_consent: int = 0
    no_key: int = 0
    truncated: int = 0
    invalid: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "skipped_no_consent": self.no_consent,
            "skipped_no_key": self.no_key,
            "truncated_cells": self.truncated,
            "invalid_values": dict(sorted(self.invalid.items())),
        }

    def add(self, other: RowStats) -> None:
        """Count in another part's figures (a feed written in parts)."""
        self.selected += other.selected
        self.no_consent += other.no_consent
        self.no_key += other.no_key
        self.truncated += other.truncated
        for key, count in other.invalid.items():
            self.invalid[key] = self.invalid.get(key, 0) + count


def column_names(definition: FeedDefinition) -> list[str]:
    return [c.name for c in definition.columns]


class _Record:
    """One selected profile: its ids and the documents the columns read (decoded once)."""

    __slots__ = (
        "customer_key",
        "docs",
        "entered_at",
        "id",
        "masterdata",
        "mood",
        "segments",
    )

    def __init__(
        self,
        id: str,
        customer_key: str | None,
        docs: dict[str, Any],
        segments: list[str],
        entered_at: datetime | None,
    ) -> None:
        self.id = id
        self.customer_key = customer_key
        self.docs = docs
        self.masterdata: dict[str, Any] = docs.get("masterdata") or {}
        self.segments = segments
        self.entered_at = entered_at
        self.mood: tuple[str, float, bool] | None = None


def _from_us(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return EPOCH + timedelta(microseconds=value)
    return None


def _doc(record: _Record, name: str) -> dict[str, Any]:
    found = record.docs.get(name)
    return found if isinstance(found, dict) else {}


Getter = Callable[[_Record], Any]


def _getter(
    source: str, settings: Settings, now: datetime, previous: Mapping[str, str] | None = None
) -> tuple[Getter, set[str]]:
    """How to read `source` from a record, and the profile documents it needs; `previous`
    maps profile ids to their customer key before a rotation since the feed's last run."""
    if source == "customer_key":
        return (lambda r: r.customer_key), set()
    if source == "previous_customer_key":
        found = previous or {}
        return (lambda r: found.get(r.id)), set()
    if source == "profile_id":
        return (lambda r: r.id), set()
    if source == "created_at":
        return (lambda r: r.docs["created_at"]), {"created_at"}
    if source == "updated_at":
        return (lambda r: r.docs["updated_at"]), {"updated_at"}
    if source == "segments":
        return (lambda r: "|".join(r.segments)), set()
    if source == "segment.entered_at":
        return (lambda r: r.entered_at), set()
    if source.startswith("mood."):
        index = {"mood.label": 0, "mood.score": 1, "mood.churn_risk": 2}[source]

        def mood_of(r: _Record) -> Any:
            if r.mood is None:
                r.mood = mood_summary(_doc(r, "derived"), settings.mood, now=now)
            return r.mood[index]

        return mood_of, {"derived"}
    if source in ("nps.score", "nps.date"):
        position = 0 if source == "nps.score" else 1

        def nps(r: _Record) -> Any:
            found = _doc(r, "computed").get("nps")
            if not found:
                return None
            return found[0] if position == 0 else _from_us(found[1])

        return nps, {"computed"}
    head, _, name = source.partition(".")
    if head == "masterdata":
        return (lambda r: r.masterdata.get(name)), {"masterdata"}
    if head == "computed":
        if name in ("first_seen", "last_seen"):
            return (lambda r: _from_us(_doc(r, "computed").get(name))), {"computed"}
        if name == "channels":
            return (lambda r: "|".join(_doc(r, "computed").get(name) or ())), {"computed"}
        return (lambda r: _doc(r, "computed").get(name)), {"computed"}
    if head == "trait":

        def trait(r: _Record) -> Any:
            found = _doc(r, "traits").get(name)
            return found[0] if isinstance(found, list) and found else None

        return trait, {"traits"}
    if head == "consent":

        def consent(r: _Record) -> Any:
            found = _doc(r, "consent").get(name)
            if not isinstance(found, list) or not found:
                return None
            return "granted" if found[0] is True else "withdrawn"

        return consent, {"consent"}
    raise ValueError(f"unknown source `{source}`")  # the definition validated it


def _as_date(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


Transform = Callable[[Any, _Record | None], Any]


class _Salutation:
    """The salutation transform: the word for a gender (any spelling the master data
    understands), empty for none, diverse or unknown."""

    def __init__(self, words: Mapping[str, str]) -> None:
        self._words = words
        # master data holds the normalised gender already: most cells are one look-up
        self._known: dict[Any, str] = {**words, None: "", "diverse": "", "unknown": ""}

    def __call__(self, v: Any, _r: _Record | None) -> Any:
        if v is None or isinstance(v, str):  # (a list or dict cannot be looked up)
            found = self._known.get(v)
            if found is not None:
                return found
        return self._words.get(normalise_gender(v).value or "", "")

    def column(self, values: list[Any]) -> list[Any]:
        """A whole column: one dict look-up a cell, in C; the cells it does not know (or
        cannot hash) go through `__call__`."""
        try:
            found = list(map(self._known.get, values, repeat(_UNKNOWN)))
        except TypeError:
            return [self(v, None) for v in values]
        if _UNKNOWN in found:
            found = [
                self(v, None) if f is _UNKNOWN else f for v, f in zip(values, found, strict=True)
            ]
        return found


_UNKNOWN = object()


def _transform(
    name: str, argument: Any, column: str, settings: Settings, stats: RowStats
) -> Transform:
    def invalid() -> None:
        key = f"{column}:{name}"
        stats.invalid[key] = stats.invalid.get(key, 0) + 1

    if name == "upper":
        return lambda v, _r: v.upper() if isinstance(v, str) else v
    if name == "lower":
        return lambda v, _r: v.lower() if isinstance(v, str) else v
    if name == "trim":
        return lambda v, _r: v.strip() if isinstance(v, str) else v
    if name == "default":
        return lambda v, _r: argument if v is None or v == "" else v
    if name == "max_length":

        def cut(v: Any, _r: _Record | None) -> Any:
            if v is None:
                return v
            text = v if isinstance(v, str) else str(v)
            if len(text) > argument:
                stats.truncated += 1
                return text[:argument]
            return v

        return cut
    if name == "date":

        def date(v: Any, _r: _Record | None) -> Any:
            if v is None or v == "":
                return v
            found = _as_date(v)
            if found is None:
                invalid()
                return None
            return found.strftime(argument)

        return date
    if name == "e164":
        region = settings.identity.default_region

        def phone(v: Any, _r: _Record | None) -> Any:
            if v is None or v == "":
                return v
            found = normalise_phone(v, region=region).value
            if found is None:
                invalid()
            return found

        return phone
    if name == "salutation":
        return _Salutation(_SALUTATIONS[argument])
    if name == "postal_code":

        def postal(v: Any, r: _Record | None) -> Any:
            if v is None or v == "":
                return v
            home = r.masterdata.get("country") if r is not None else None
            country = argument or home or "DE"
            found = normalise_postal_code(v, country=country).value
            if found is None:
                invalid()
            return found

        return postal
    raise ValueError(f"unknown transform `{name}`")  # the definition validated it


_JSON_DOCS = ("computed", "consent", "derived", "masterdata", "traits")


def _cell(
    column: Column,
    settings: Settings,
    now: datetime,
    stats: RowStats,
    previous: Mapping[str, str] | None = None,
) -> tuple[Getter, set[str]]:
    if column.source is None:
        constant = column.value
        get: Getter = lambda _r: constant  # noqa: E731
        docs: set[str] = set()
    else:
        get, docs = _getter(column.source, settings, now, previous)
    transforms = [
        _transform(name, argument, column.name, settings, stats)
        for item in column.transforms
        for name, argument in item.items()
    ]
    if any("postal_code" in item for item in column.transforms):
        docs = docs | {"masterdata"}
    if not transforms:
        return get, docs

    def value(r: _Record) -> Any:
        found = get(r)
        for step in transforms:
            found = step(found, r)
        return found

    return value, docs


def _select(
    conn: sa.Connection,
    definition: FeedDefinition,
    settings: Settings,
    docs: list[str],
    now: datetime,
    *,
    with_entry: bool,
    fields: Sequence[str] = (),
    bounds: Bounds | None = None,
    raw_docs: bool = False,
    tail: bool = True,
) -> sa.Select[Any]:
    """The query: id, customer key, whether consent is granted, the documents (JSON as text,
    decoded by the caller; times as stored), the master-data `fields` as text (PostgreSQL:
    taken from the binary document by the server, in its own process), then the segment and
    entry time. With `bounds`, only the profiles in that range of ids. `raw_docs` reads the
    documents as bytes (UTF-8 JSON, not decoded into text first: a decoder takes them as
    they are). `tail=False` leaves out the segment and the entry time (for a caller that
    needs neither).

    With segments as the source, it reads through the members' index in id order (no sort):
    a profile in several of them comes once per segment, consecutive rows for the caller to
    join.
    """
    p = profiles
    postgres = is_postgres(conn.engine)
    purpose = definition.purpose
    granted = (
        consent_granted(postgres, purpose, opt_out=settings.profiles.opt_out(purpose))
        if purpose is not None
        else sa.true()
    )
    columns: list[Any] = [p.c.id, p.c.customer_key, granted]
    as_json: Any = sa.LargeBinary if raw_docs else sa.Text
    columns.extend(
        sa.cast(p.c[name], as_json) if name in _JSON_DOCS else p.c[name] for name in docs
    )
    columns.extend(p.c.masterdata.op("->>")(sa.literal(name, sa.Text)) for name in fields)
    where: list[Any] = [p.c.merged_into.is_(None)]
    if definition.source.condition is not None:
        tree = condition_tree(definition.source.condition)
        where.append(condition_where(conn, settings, tree, now))
    m = segment_members
    # Byte order on both backends. PostgreSQL: both sides in "C" (the join too), so the
    # members' and the profiles' indexes in that order (migrations 0015, 0016) are merged
    # without a sort, and a range is one range of each (the bounds on both: the planner does
    # not carry a range across a join).
    pid = p.c.id.collate("C") if postgres else p.c.id
    member = m.c.profile_id.collate("C") if postgres else m.c.profile_id
    keys = [member, pid] if definition.source.segments else [pid]
    if bounds is not None:
        for key in keys:
            if bounds[0] is not None:
                where.append(key > bounds[0])
            if bounds[1] is not None:
                where.append(key <= bounds[1])
    order = keys[0]
    if definition.source.segments:
        if tail:
            columns += [m.c.segment, m.c.entered_at if with_entry else sa.null()]
        return (
            sa.select(*columns)
            .select_from(m.join(p, pid == member))
            .where(m.c.segment.in_(definition.source.segments), *where)
            .order_by(order)
        )
    if tail:
        columns += [sa.null(), sa.null()]
    return sa.select(*columns).where(*where).order_by(order)


def _fast_fields(definition: FeedDefinition) -> list[tuple[str, str | None]] | None:
    """For a feed whose columns are all the customer key, the profile id, master-data fields
    or constants (with transforms that need nothing else), each column's (kind, name); None
    for other feeds. Such rows are built without a record per profile."""
    if definition.key != "customer_key":
        return None
    found: list[tuple[str, str | None]] = []
    for column in definition.columns:
        if any("postal_code" in t and t["postal_code"] is None for t in column.transforms):
            return None
        source = column.source
        if source is None:
            found.append(("value", column.value))
        elif source in ("customer_key", "profile_id"):
            found.append((source, None))
        elif source.startswith("masterdata."):
            found.append(("masterdata", source.partition(".")[2]))
        else:
            return None
    return found


def _previous_keys(conn: sa.Connection, feed: str) -> dict[str, str]:
    """Each re-keyed profile's key before the newest rotation since the feed's last successful
    run started (all rotations for a feed that never ran): so the pair goes out once."""
    since = conn.execute(
        sa.select(feed_runs.c.started_at)
        .where(feed_runs.c.feed == feed, feed_runs.c.state == "succeeded")
        .order_by(feed_runs.c.started_at.desc())
        .limit(1)
    ).scalar()
    c = customer_key_changes.c
    stmt = sa.select(c.profile_id, c.old_key).order_by(c.id)
    if since is not None:
        stmt = stmt.where(c.changed_at >= since)
    found: dict[str, str] = {}
    for profile_id, old_key in conn.execute(stmt):
        found.setdefault(profile_id, old_key)  # the key the recipient knew
    return found


def feed_rows(
    conn: sa.Connection,
    definition: FeedDefinition,
    settings: Settings,
    *,
    now: datetime,
    stats: RowStats,
    fast: bool = True,
) -> Iterator[FeedRow]:
    """The feed's rows in profile-id order (one per profile, also when in several of its
    segments), streamed. `fast=False` takes the general path also for simple feeds (tests
    compare both)."""
    fields = _fast_fields(definition) if fast else None
    if fields is None:
        yield from _general_rows(conn, definition, settings, now=now, stats=stats)
        return
    for ids, keys, columns in _fast_chunks(
        conn, definition, settings, fields, stats=stats, now=now
    ):
        for n, cells in enumerate(zip(*columns, strict=True)):
            yield FeedRow(ids[n], keys[n], list(cells))


def feed_columns(
    conn: sa.Connection,
    definition: FeedDefinition,
    settings: Settings,
    *,
    now: datetime,
    stats: RowStats,
    bounds: Bounds | None = None,
) -> Generator[list[list[Any]]]:
    """The cells of `feed_rows`, a chunk of rows at a time, column by column (for a writer
    that takes whole columns: `FileWriter.write_columns`); with `bounds`, of the profiles in
    that range of ids only (a part of the file: `feeds.parts`). A caller that stops before
    the end closes this generator (on PostgreSQL the rows are streamed: until then the
    connection can do nothing else, not even roll back)."""
    fields = _fast_fields(definition)
    if fields is not None:
        chunks = _fast_chunks(
            conn, definition, settings, fields, stats=stats, now=now, bounds=bounds, stream=True
        )
        with closing(chunks):
            for _ids, _keys, columns in chunks:
                yield columns
        return
    chunk: list[list[Any]] = []
    for row in _general_rows(conn, definition, settings, now=now, stats=stats, bounds=bounds):
        chunk.append(row.cells)
        if len(chunk) >= _YIELD:
            yield _by_column(chunk)
            chunk = []
    if chunk:
        yield _by_column(chunk)


def _by_column(rows: list[list[Any]]) -> list[list[Any]]:
    return [list(map(itemgetter(n), rows)) for n in range(len(rows[0]))]


def _kept(rows: Sequence[Any], stats: RowStats, *, several: bool, last: list[Any]) -> list[Any]:
    """The rows of a partition that become feed rows: each profile once (the same profile
    comes again through another of several source segments; `last` carries the previous
    partition's last id), with consent for the purpose and a key; the others counted."""
    kept = list(rows)
    if several:
        kept = []
        for row in rows:
            if row[0] != last[0]:
                kept.append(row)
                last[0] = row[0]
    stats.selected += len(kept)
    if not all(map(itemgetter(2), kept)):
        granted = [row for row in kept if row[2]]
        stats.no_consent += len(kept) - len(granted)
        kept = granted
    if not all(map(itemgetter(1), kept)):
        keyed = [row for row in kept if row[1]]
        stats.no_key += len(kept) - len(keyed)
        kept = keyed
    return kept


def _driver_partitions(result: sa.CursorResult[Any]) -> Generator[Sequence[Any]]:
    """The rows of `result`, `_YIELD` at a time, as the driver gives them (plain tuples)
    instead of SQLAlchemy's result rows (a third of a simple feed's time at 1M rows). The
    first batch comes through the result, which may hold a row it read ahead (a streamed
    result reads one for the columns' description); with that batch its buffer is empty,
    and the driver's cursor goes on from there (the feed tests compare every row on both
    backends)."""
    try:
        first = result.fetchmany(_YIELD)
        if first:
            yield first
        if len(first) < _YIELD:
            return
        cursor = result.cursor
        while partition := cursor.fetchmany(_YIELD):
            yield partition
    finally:
        result.close()  # (a server-side cursor on PostgreSQL)


@lru_cache(maxsize=1)
def chunked_rows() -> bool:
    """Whether psycopg's libpq streams rows in chunks (libpq 17 and later: the binary
    package bundles one; a system libpq may be older, and its rows come by `FETCH`). Asked
    once a process: every range of a feed and its process count ask it."""
    import psycopg

    return bool(psycopg.capabilities.has_stream_chunked())


def _streamed_partitions(conn: sa.Connection, stmt: sa.Select[Any]) -> Generator[Sequence[Any]]:
    """PostgreSQL: the rows of `stmt`, `_YIELD` at a time, streamed by psycopg in chunks of
    that many rows (libpq's chunked mode: the server sends the rows as it makes them while
    this process works on the ones before; a server-side cursor's `FETCH` makes the two
    wait for each other). The connection does nothing else until the rows are read or this
    generator is closed."""
    # The statement and its values as SQLAlchemy's `execute` sends them: lists expanded,
    # each value through its type's processor (a time as UTC, for one).
    state = stmt.compile(dialect=conn.dialect).construct_expanded_state()
    params = dict(state.parameters)
    for name, process in state.processors.items():
        if name in params:
            params[name] = process(params[name])
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    rows = cursor.stream(state.statement, params, size=_YIELD)
    try:
        while partition := list(islice(rows, _YIELD)):
            yield partition
    finally:
        # A stream holds the connection until it is read to the end or closed (this cancels
        # the query): even a rollback would wait for it. Callers close this generator.
        rows.close()
        cursor.close()


@lru_cache(maxsize=64)
def _fields_decoder(names: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
    """A decoder of master-data documents that keeps only the fields `names` (a struct of
    them, each null when absent): it skips the other fields and builds no dict, a third
    of the time of decoding whole documents and picking from them."""
    struct = msgspec.defstruct(
        "MasterDataFields",
        [(f"f{n}", object, None) for n in range(len(names))],
        rename={f"f{n}": name for n, name in enumerate(names)},
        gc=False,
    )
    return msgspec.json.Decoder(struct)


def _masterdata_columns(texts: list[bytes | None], names: list[str]) -> dict[str, list[Any]]:
    """The values of the master-data fields `names`, column by column, from the documents
    (UTF-8 JSON; none, or not an object: no values)."""
    decode = _fields_decoder(tuple(names)).decode
    try:
        docs = list(map(decode, cast("list[bytes]", texts)))
    except _NOT_DECODED:  # one of another shape, or none (the column is NOT NULL: a safeguard)
        empty = decode(b"{}")
        docs = [_decoded_or(decode, text, empty) for text in texts]
    return {name: list(map(attrgetter(f"f{n}"), docs)) for n, name in enumerate(names)}


_NOT_DECODED = (TypeError, msgspec.ValidationError, msgspec.DecodeError)


def _decoded_or(decode: Callable[[bytes], Any], text: bytes | None, empty: Any) -> Any:
    try:
        return decode(cast("bytes", text))
    except _NOT_DECODED:
        return empty


def _fast_chunks(
    conn: sa.Connection,
    definition: FeedDefinition,
    settings: Settings,
    fields: list[tuple[str, str | None]],
    *,
    now: datetime,
    stats: RowStats,
    bounds: Bounds | None = None,
    stream: bool = False,
) -> Generator[tuple[list[str], list[str], list[list[Any]]]]:
    """The rows of a feed of keys, ids, master data and constants, a partition at a time:
    their profile ids, keys and cells column by column (each a list comprehension over the
    partition, not a record per profile). `stream`: PostgreSQL streams the rows
    (`_streamed_partitions`; the caller reads them all or closes this generator)."""
    md_names = sorted({name for kind, name in fields if kind == "masterdata" and name})
    # PostgreSQL takes the fields out of the document itself (in its own process, from the
    # binary jsonb: no text to decode here); SQLite's text JSON is decoded here, once a row
    # (its `json_extract` parses the text again for every field: slower at 1M rows).
    by_server = is_postgres(conn.engine) and bool(md_names)
    docs = ["masterdata"] if md_names and not by_server else []
    stmt = _select(
        conn,
        definition,
        settings,
        docs,
        now,
        with_entry=False,
        fields=md_names if by_server else (),
        bounds=bounds,
        raw_docs=True,
        tail=False,
    )
    partitions = (
        _streamed_partitions(conn, stmt)
        if stream and is_postgres(conn.engine) and chunked_rows()
        else _driver_partitions(conn.execution_options(stream_results=True).execute(stmt))
    )
    transforms = [
        (
            index,
            [
                _transform(name, argument, column.name, settings, stats)
                for item in column.transforms
                for name, argument in item.items()
            ],
        )
        for index, column in enumerate(definition.columns)
        if column.transforms
    ]
    several = len(definition.source.segments) > 1
    last: list[Any] = [None]
    try:
        for partition in partitions:
            kept = _kept(partition, stats, several=several, last=last)
            if not kept:
                continue
            # The partition column by column: one `itemgetter` pass a column (four times the
            # speed of `zip(*kept)`, which takes each of the thousands of rows as an argument).
            ids, keys = list(map(_FIRST, kept)), list(map(_SECOND, kept))
            if by_server:
                values = {
                    name: list(map(itemgetter(3 + n), kept)) for n, name in enumerate(md_names)
                }
            elif docs:
                values = _masterdata_columns(list(map(_FOURTH, kept)), md_names)
            else:
                values = {}
            columns: list[list[Any]] = []
            for kind, name in fields:
                if kind == "masterdata":
                    columns.append(values[name or ""])
                elif kind == "customer_key":
                    columns.append(keys)
                elif kind == "profile_id":
                    columns.append(ids)
                else:
                    columns.append([name] * len(kept))
            for index, steps in transforms:
                column = columns[index]
                for step in steps:  # (they read the value only)
                    if isinstance(step, _Salutation):
                        column = step.column(column)
                    else:
                        column = [step(value, None) for value in column]
                columns[index] = column
            yield ids, keys, columns
    finally:
        partitions.close()  # (a stream: its query ended, the connection free)


def _general_rows(
    conn: sa.Connection,
    definition: FeedDefinition,
    settings: Settings,
    *,
    now: datetime,
    stats: RowStats,
    bounds: Bounds | None = None,
) -> Iterator[FeedRow]:
    previous = (
        _previous_keys(conn, definition.name)
        if any(c.source == "previous_customer_key" for c in definition.columns)
        else None
    )
    cells = [_cell(c, settings, now, stats, previous) for c in definition.columns]
    key_get, key_docs = _getter(definition.key, settings, now)
    needed: set[str] = set(key_docs)
    for _get, docs in cells:
        needed |= docs
    doc_names = sorted(needed)
    json_docs = [i for i, name in enumerate(doc_names) if name in _JSON_DOCS]
    # Plain master-data columns are read straight from the decoded document (most columns).
    plan: list[tuple[str | None, Getter]] = [
        (
            c.source.partition(".")[2]
            if c.source is not None and c.source.startswith("masterdata.") and not c.transforms
            else None,
            get,
        )
        for c, (get, _docs) in zip(definition.columns, cells, strict=True)
    ]
    order = {name: index for index, name in enumerate(definition.source.segments)}
    width = len(doc_names)
    with_entry = any(c.source == "segment.entered_at" for c in definition.columns)
    stmt = _select(conn, definition, settings, doc_names, now, with_entry=with_entry, bounds=bounds)
    result = conn.execution_options(stream_results=True, yield_per=_YIELD).execute(stmt)
    by_customer_key = definition.key == "customer_key"
    pending: _Record | None = None
    granted = False
    loads = orjson.loads

    def finish(record: _Record, granted: bool) -> FeedRow | None:
        stats.selected += 1
        if not granted:
            stats.no_consent += 1
            return None
        key = record.customer_key if by_customer_key else key_get(record)
        if key is None or key == "":
            stats.no_key += 1
            return None
        if len(record.segments) > 1:
            record.segments.sort(key=lambda s: order.get(s, 0))
        field = record.masterdata.get
        return FeedRow(
            record.id,
            key if type(key) is str else str(key),
            [get(record) if name is None else field(name) for name, get in plan],
        )

    for partition in result.partitions(_YIELD):
        for row in partition:
            pid = row[0]
            if pending is not None and pending.id == pid:
                pending.segments.append(row[-2])
                entered = row[-1]
                if entered is not None and (
                    pending.entered_at is None or entered < pending.entered_at
                ):
                    pending.entered_at = entered
                continue
            if pending is not None and (done := finish(pending, granted)) is not None:
                yield done
            values = list(row[3 : 3 + width])
            for index in json_docs:
                text = values[index]
                values[index] = loads(text) if text is not None else None
            segment = row[-2]
            granted = bool(row[2])
            pending = _Record(
                pid,
                row[1],
                dict(zip(doc_names, values, strict=True)),
                [segment] if segment is not None else [],
                row[-1],
            )
    if pending is not None and (done := finish(pending, granted)) is not None:
        yield done

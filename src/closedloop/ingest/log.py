"""The event log: append-only, the source of truth; and the failed-events table beside it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NewType

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.errors import InvalidInputError
from closedloop.ingest._tables import EVENT_COLUMNS, FAILED_COLUMNS, events, failed_events, sources
from closedloop.store import bulk_insert_ignoring_duplicates, sqlite_insert_autocommit

__all__ = [
    "FAILED_PAYLOAD_LIMIT",
    "EventId",
    "EventQuery",
    "FailedEvent",
    "LogPosition",
    "OpenTransaction",
    "StoredEvent",
    "after_in_log_order",
    "append",
    "append_alone",
    "committed_after",
    "count_events",
    "event_from_row",
    "failed_row",
    "failed_row_from_event",
    "list_events",
    "list_failed_events",
    "oldest_open_transaction",
    "read_committed",
    "readable_horizon",
]

_log = logging.getLogger(__name__)

EventId = NewType("EventId", int)
# A failed event keeps at most this much of its JSON (the rest is cut, and flagged).
FAILED_PAYLOAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class StoredEvent:
    id: EventId
    source: str
    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class FailedEvent:
    id: int
    source: str | None
    origin: str
    message_id: str | None
    field: str | None
    reason: str
    payload: str | None
    payload_truncated: bool
    received_at: datetime


@dataclass(frozen=True)
class EventQuery:
    """Filters of `list_events`; every value is bound, never spliced into SQL."""

    user_id: str | None = None
    anonymous_id: str | None = None
    type: str | None = None
    event: str | None = None
    since: datetime | None = None
    source: str | None = None
    before_id: int | None = None
    after_id: int | None = None
    limit: int = 100
    newest_first: bool = True


def failed_row(
    *,
    source_id: int | None,
    origin: str,
    message: Any,
    field: str | None,
    reason: str,
    received_at: datetime,
) -> tuple[Any, ...]:
    """A failed_events row (order: `FAILED_COLUMNS`) keeping the message as JSON text."""
    message_id = message.get("messageId") if isinstance(message, dict) else None
    try:
        text = orjson.dumps(message).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(message)
    truncated = len(text) > FAILED_PAYLOAD_LIMIT
    if truncated:
        text = text[:FAILED_PAYLOAD_LIMIT]
    text = text.replace("\x00", "\\u0000")
    return (
        source_id,
        origin[:300],
        str(message_id)[:300].replace("\x00", "") if message_id is not None else None,
        field[:300] if field else None,
        reason,
        text,
        truncated,
        received_at,
    )


def failed_row_from_event(row: tuple[Any, ...], *, origin: str, reason: str) -> tuple[Any, ...]:
    """A failed_events row for an event row (order: `EVENT_COLUMNS`) the store refused."""
    payload = str(row[-1])
    return (
        row[0],
        origin,
        row[1],
        None,
        reason,
        payload[:FAILED_PAYLOAD_LIMIT].replace("\x00", "\\u0000"),
        len(payload) > FAILED_PAYLOAD_LIMIT,
        row[9],
    )


def append(
    conn: sa.Connection,
    rows: Sequence[tuple[Any, ...]],
    failed: Sequence[tuple[Any, ...]] = (),
) -> int:
    """Append event rows (ignoring known (source, messageId)) and failed rows, in `conn`'s
    transaction; return how many events were new."""
    inserted = bulk_insert_ignoring_duplicates(
        conn, events, EVENT_COLUMNS, rows, conflict_columns=("source_id", "message_id")
    )
    if failed:
        conn.execute(
            failed_events.insert(), [dict(zip(FAILED_COLUMNS, row, strict=True)) for row in failed]
        )
    return inserted


def append_alone(engine: Engine, rows: Sequence[tuple[Any, ...]]) -> int | None:
    """Append event rows in one statement that is its own transaction (SQLite, when they fit);
    None when that path does not apply and `append` in a transaction must be used."""
    return sqlite_insert_autocommit(
        engine,
        events,
        EVENT_COLUMNS,
        rows,
        conflict_columns=("source_id", "message_id"),
        ingest=True,
    )


def event_from_row(row: sa.Row[Any]) -> StoredEvent:
    m = row._mapping
    payload = m["payload"]
    if isinstance(payload, str | bytes):
        payload = orjson.loads(payload)
    return StoredEvent(
        id=EventId(m["id"]),
        source=m["source_name"],
        message_id=m["message_id"],
        type=m["type"],
        event=m["event"],
        user_id=m["user_id"],
        anonymous_id=m["anonymous_id"],
        timestamp=m["timestamp"],
        original_timestamp=m["original_timestamp"],
        sent_at=m["sent_at"],
        received_at=m["received_at"],
        payload=payload,
    )


@dataclass(frozen=True, order=True)
class LogPosition:
    """Where a reader of the log stands: after the event (`txid`, `id`).

    `txid` is the writing transaction on PostgreSQL and 0 on SQLite (where id order is commit
    order). Start from `LogPosition()`.
    """

    txid: int = 0
    id: int = 0


def after_in_log_order(
    dialect: str, after: LogPosition, table: sa.Table = events
) -> sa.ColumnElement[bool]:
    """The rows of `table` (the events, or another log with `id` and `txid`: the segment
    changes) after `after` in the log's order: (txid, id) on PostgreSQL, id on SQLite (one
    writer at a time, so id order is commit order). Committed or not."""
    if dialect == "postgresql":
        return sa.tuple_(table.c.txid, table.c.id) > sa.tuple_(after.txid, after.id)
    return table.c.id > after.id


def committed_after(
    stmt: sa.Select[Any], dialect: str, after: LogPosition, table: sa.Table = events
) -> sa.Select[Any]:
    """`stmt` over `table` (`after_in_log_order`) narrowed to the committed rows after
    `after`, in commit order.

    On PostgreSQL only rows of transactions older than every open one, by (txid, id): a row
    whose transaction took its id early and commits late is waited for, never skipped. On
    SQLite by id.
    """
    stmt = stmt.where(after_in_log_order(dialect, after, table))
    if dialect == "postgresql":
        return stmt.where(table.c.txid < readable_horizon()).order_by(table.c.txid, table.c.id)
    return stmt.order_by(table.c.id)


def readable_horizon() -> sa.TextClause:
    """PostgreSQL: the transaction id below which every transaction has ended (the current
    snapshot's xmin, over the whole cluster). Rows of later transactions wait, committed or
    not: one of them may still commit a row before them in the log's order."""
    return sa.text("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")


@dataclass(frozen=True)
class OpenTransaction:
    """PostgreSQL: the oldest transaction with an id still open in the cluster, which holds
    the readable horizon (`readable_horizon`). Fields another role's session hides from the
    store's user (without `pg_read_all_stats`) are None; a prepared transaction has no `pid`."""

    pid: int | None
    user: str | None
    application: str | None
    database: str | None
    state: str | None
    since: datetime | None

    @property
    def parts(self) -> list[str]:
        """What names it, as far as it is seen: `PID 4711`, user, application, database,
        state."""
        pid = f"PID {self.pid}" if self.pid is not None else None
        return [p for p in (pid, self.user, self.application, self.database, self.state) if p]


_OLDEST_OPEN = """
SELECT pid, usename, application_name, datname, state, xact_start, age(backend_xid) AS age
FROM pg_stat_activity WHERE backend_xid IS NOT NULL
UNION ALL
SELECT NULL, owner, 'prepared transaction ' || gid, database, 'prepared', prepared,
       age(transaction)
FROM pg_prepared_xacts
ORDER BY age DESC LIMIT 1
"""


def oldest_open_transaction(conn: sa.Connection) -> OpenTransaction | None:
    """PostgreSQL: the session or prepared transaction with the oldest transaction id still
    open, as far as the store's user may see it (None on SQLite, or when none is seen)."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        with conn.begin_nested():  # a failure leaves the caller's transaction usable
            row = conn.exec_driver_sql(_OLDEST_OPEN).first()
    except sa.exc.DBAPIError:
        # A server that hides its sessions from this user (some hosted ones): the held
        # events still show, unnamed.
        _log.warning("cannot read the oldest open transaction", exc_info=True)
        return None
    if row is None:
        return None
    return OpenTransaction(
        pid=row[0],
        user=row[1],
        application=row[2] or None,
        database=row[3],
        state=row[4],
        since=row[5],
    )


def read_committed(
    conn: sa.Connection, after: LogPosition, *, limit: int = 1000
) -> list[tuple[LogPosition, StoredEvent]]:
    """The next events after `after`, in commit order, each with its position.

    On PostgreSQL only events of transactions older than every transaction still open are
    returned, ordered by (txid, id): an event whose transaction commits late is waited for,
    never skipped. A reader that keeps the last position in the same transaction as what it
    derives from the events applies each exactly once.
    """
    if not 1 <= limit <= 100_000:
        raise InvalidInputError(f"invalid `limit` `{limit}`: expected 1 to 100000", field="limit")
    stmt = sa.select(events, sources.c.name.label("source_name")).join(
        sources, sources.c.id == events.c.source_id
    )
    stmt = committed_after(stmt, conn.dialect.name, after)
    found = []
    for row in conn.execute(stmt.limit(limit)):
        event = event_from_row(row)
        found.append((LogPosition(int(row.txid or 0), int(event.id)), event))
    return found


def list_events(engine: Engine, query: EventQuery) -> list[StoredEvent]:
    """Events matching `query`, newest first by default, at most `query.limit`."""
    if not 1 <= query.limit <= 1000:
        raise InvalidInputError(
            f"invalid `limit` `{query.limit}`: expected 1 to 1000", field="limit"
        )
    stmt = sa.select(events, sources.c.name.label("source_name")).join(
        sources, sources.c.id == events.c.source_id
    )
    conditions: list[sa.ColumnElement[bool]] = []
    if query.user_id is not None:
        conditions.append(events.c.user_id == query.user_id)
    if query.anonymous_id is not None:
        conditions.append(events.c.anonymous_id == query.anonymous_id)
    if query.type is not None:
        conditions.append(events.c.type == query.type)
    if query.event is not None:
        conditions.append(events.c.event == query.event)
    if query.since is not None:
        conditions.append(events.c.timestamp >= query.since)
    if query.source is not None:
        conditions.append(sources.c.name == query.source)
    if query.before_id is not None:
        conditions.append(events.c.id < query.before_id)
    if query.after_id is not None:
        conditions.append(events.c.id > query.after_id)
    order = events.c.id.desc() if query.newest_first else events.c.id.asc()
    stmt = stmt.where(*conditions).order_by(order).limit(query.limit)
    with engine.connect() as conn:
        return [event_from_row(r) for r in conn.execute(stmt)]


def count_events(engine: Engine, *, source: str | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(events)
    if source is not None:
        stmt = stmt.join(sources, sources.c.id == events.c.source_id).where(
            sources.c.name == source
        )
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def list_failed_events(
    engine: Engine, *, before_id: int | None = None, limit: int = 100
) -> list[FailedEvent]:
    """Failed events, newest first."""
    if not 1 <= limit <= 1000:
        raise InvalidInputError(f"invalid `limit` `{limit}`: expected 1 to 1000", field="limit")
    stmt = sa.select(failed_events, sources.c.name.label("source_name")).outerjoin(
        sources, sources.c.id == failed_events.c.source_id
    )
    if before_id is not None:
        stmt = stmt.where(failed_events.c.id < before_id)
    stmt = stmt.order_by(failed_events.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        FailedEvent(
            id=r.id,
            source=r.source_name,
            origin=r.origin,
            message_id=r.message_id,
            field=r.field,
            reason=r.reason,
            payload=r.payload,
            payload_truncated=bool(r.payload_truncated),
            received_at=r.received_at,
        )
        for r in rows
    ]

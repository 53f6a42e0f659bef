"""Bulk append on each backend's fast path, ignoring rows that hit a unique key.

SQLite: multi-row `INSERT ... ON CONFLICT DO NOTHING` statements inside the caller's
transaction. PostgreSQL: `COPY` into the table inside a savepoint; only when a duplicate
makes it fail (rare: client retries) the rows go through a temporary table and
`INSERT ... SELECT ... ON CONFLICT DO NOTHING`. Values are plain Python values; aware
datetimes are converted for SQLite here (`UTCDateTime` columns: epoch microseconds).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from closedloop.store._engine import wal_checkpointer, write_turn
from closedloop.store._types import UTCDateTime, to_epoch_us

__all__ = ["bulk_insert_ignoring_duplicates", "sqlite_insert_autocommit"]


# SQLite binds at most 32766 values in one statement (since 3.32; 999 before).
_SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def _sqlite_rows(rows: Sequence[tuple[Any, ...]], time_columns: list[int]) -> list[Any]:
    """Flatten rows into one parameter list, times as epoch microseconds."""
    flat: list[Any] = []
    extend = flat.extend
    last: datetime | None = None
    last_us = 0
    for row in rows:
        values = list(row)
        for index in time_columns:
            value = values[index]
            if value is None:
                continue
            if value is last:  # receivedAt and sentAt are shared by a batch
                values[index] = last_us
            else:
                last, last_us = value, to_epoch_us(value)
                values[index] = last_us
        extend(values)
    return flat


def _quote(conn: sa.Connection | Engine, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _names(
    conn: sa.Connection | Engine,
    table: sa.Table,
    columns: Sequence[str],
    conflict_columns: Sequence[str],
) -> tuple[str, str, str]:
    """The quoted table, column list and conflict columns; names must be `table`'s own."""
    for name in (*columns, *conflict_columns):
        if name not in table.c:
            raise ValueError(f"`{name}` is not a column of `{table.name}`")
    return (
        _quote(conn, table.name),
        ", ".join(_quote(conn, c) for c in columns),
        ", ".join(_quote(conn, c) for c in conflict_columns),
    )


def _time_columns(table: sa.Table, columns: Sequence[str]) -> list[int]:
    return [i for i, c in enumerate(columns) if isinstance(table.c[c].type, UTCDateTime)]


def _sqlite_insert(table_sql: str, cols_sql: str, conflict_sql: str, width: int, count: int) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return (
        f"INSERT INTO {table_sql} ({cols_sql}) VALUES "  # noqa: S608 # nosec B608
        + ", ".join([one] * count)
        + f" ON CONFLICT ({conflict_sql}) DO NOTHING"
    )


def _sqlite_execute(cursor: Any, statement: str, params: list[Any]) -> int:
    try:
        cursor.execute(statement, params)
    except sqlite3.Error as exc:
        # The raw cursor bypasses SQLAlchemy: wrap like it would, so callers see one error
        # tree (OperationalError is what marks a fault as transient).
        raise sa.exc.DBAPIError.instance(statement[:200], None, exc, sqlite3.Error) from exc
    return int(cursor.rowcount)


# Where the engine has a background checkpointer (the server, the worker), the writer's own
# connection still checkpoints inline once the WAL holds this many pages (40 MB). Its
# commits follow each other without a pause, so a passive checkpoint from another thread
# never catches up and the WAL cannot start again from its beginning: left to the thread
# and the 1 GB fallback, one commit in a few thousand copied the whole WAL and every request
# waited a second for it (p99 700 ms under the batch benchmark, 45 ms with this).
_WRITER_CHECKPOINT_PAGES = 10_000


class _WriterConnection:
    """A SQLite connection of its own for `sqlite_insert_autocommit`, kept out of the pool:
    no check-out, no rollback on check-in, and its own checkpoint threshold. One thread
    appends through it at a time (`lock`); another finds it busy and uses the pool."""

    def __init__(self, dbapi: Any) -> None:
        self.dbapi = dbapi
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.dbapi.close()


_writers: WeakKeyDictionary[Engine, _WriterConnection] = WeakKeyDictionary()
_writers_lock = threading.Lock()


def _writer_connection(engine: Engine) -> _WriterConnection:
    found = _writers.get(engine)
    if found is not None:
        return found
    with _writers_lock:
        found = _writers.get(engine)
        if found is None:
            raw = engine.raw_connection()  # set up by the engine's connect hook (WAL, sync)
            dbapi: Any = raw.driver_connection
            raw.detach()  # ours from now on: closed when the engine is disposed
            if wal_checkpointer(engine) is not None:
                dbapi.execute(f"PRAGMA wal_autocheckpoint={_WRITER_CHECKPOINT_PAGES}")
            found = _writers[engine] = _WriterConnection(dbapi)
            if not event.contains(engine, "engine_disposed", _close_writer):
                event.listen(engine, "engine_disposed", _close_writer)
    return found


def _close_writer(engine: Engine) -> None:
    with _writers_lock:
        found = _writers.pop(engine, None)
    if found is not None:
        found.close()


def sqlite_insert_autocommit(
    engine: Engine,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict_columns: Sequence[str],
    ingest: bool = False,
) -> int | None:
    """Insert `rows` as one statement in its own implicit transaction; return how many were
    new, or None when they do not fit in one statement (use the transactional path).
    `ingest`: an append of the event log (`write_turn`).

    SQLite begins, inserts and commits (with its fsync) inside one `sqlite3_step`, so the
    writer thread gives the interpreter lock away once per group instead of three times
    (BEGIN, INSERT, COMMIT); each hand-back waits behind the event loop's thread. For the
    same reason the statement runs on a connection of the engine's own (`_WriterConnection`):
    a pooled one costs a rollback at check-in, another hand-back (12 % of the batch
    benchmark's events/s).
    """
    if engine.dialect.name != "sqlite" or not rows:
        return None
    if len(rows) * len(columns) > _SQLITE_MAX_VARIABLES:
        return None
    table_sql, cols_sql, conflict_sql = _names(engine, table, columns, conflict_columns)
    statement = _sqlite_insert(table_sql, cols_sql, conflict_sql, len(columns), len(rows))
    params = _sqlite_rows(rows, _time_columns(table, columns))
    writer = _writer_connection(engine)
    with write_turn(engine, ingest=ingest):
        if writer.lock.acquire(blocking=False):
            try:
                # The connection is in autocommit mode (`isolation_level=None`, set on
                # connect), so this statement is a transaction of its own.
                return _sqlite_cursor_execute(writer.dbapi, statement, params)
            finally:
                writer.lock.release()
        raw = engine.raw_connection()  # another thread is appending through the writer's
        try:
            return _sqlite_cursor_execute(raw.driver_connection, statement, params)
        finally:
            raw.close()


def _sqlite_cursor_execute(dbapi: Any, statement: str, params: list[Any]) -> int:
    cursor = dbapi.cursor()
    try:
        return _sqlite_execute(cursor, statement, params)
    finally:
        cursor.close()


def bulk_insert_ignoring_duplicates(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict_columns: Sequence[str],
) -> int:
    """Insert `rows` (tuples in the order of `columns`); return how many were new.

    Runs in the caller's transaction. Table and column names come from our own `Table`
    objects, never from input; every value is bound.
    """
    if not rows:
        return 0
    table_sql, cols_sql, conflict_sql = _names(conn, table, columns, conflict_columns)
    if conn.dialect.name == "sqlite":
        # One multi-row INSERT per chunk: a single statement step releases the GIL once, where
        # executemany would release and re-take it for every row (a convoy behind the event
        # loop thread) and costs a Python-to-C round trip per row.
        time_columns = _time_columns(table, columns)
        per_statement = _SQLITE_MAX_VARIABLES // len(columns)
        inserted = 0
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                statement = _sqlite_insert(
                    table_sql, cols_sql, conflict_sql, len(columns), len(chunk)
                )
                inserted += _sqlite_execute(cursor, statement, _sqlite_rows(chunk, time_columns))
        finally:
            cursor.close()
        return inserted
    if conn.dialect.name == "postgresql":
        import psycopg

        try:
            return _postgres_copy(conn, table_sql, cols_sql, conflict_sql, rows)
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(f"COPY {table_sql}", None, exc, psycopg.Error) from exc
    raise ValueError(f"no bulk path for dialect `{conn.dialect.name}`")


def _postgres_copy(
    conn: sa.Connection,
    table_sql: str,
    cols_sql: str,
    conflict_sql: str,
    rows: Sequence[tuple[Any, ...]],
) -> int:
    import psycopg.errors

    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    savepoint = conn.begin_nested()
    try:
        with raw.cursor() as cur, cur.copy(f"COPY {table_sql} ({cols_sql}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        savepoint.commit()
        return len(rows)
    except psycopg.errors.UniqueViolation:
        savepoint.rollback()
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS closedloop_bulk_staging "
            f"(LIKE {table_sql} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        cur.execute("TRUNCATE closedloop_bulk_staging")
        with cur.copy(f"COPY closedloop_bulk_staging ({cols_sql}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO {table_sql} ({cols_sql}) "  # noqa: S608 # nosec B608
            f"SELECT {cols_sql} FROM closedloop_bulk_staging "
            f"ON CONFLICT ({conflict_sql}) DO NOTHING"
        )
        inserted = cur.rowcount
        cur.execute("TRUNCATE closedloop_bulk_staging")
    return int(inserted)

"""Engine creation with each backend's settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any
from weakref import WeakKeyDictionary

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from closedloop.store._checkpoint import WalCheckpointer

__all__ = [
    "appending",
    "begin_write",
    "create_store_engine",
    "is_postgres",
    "is_sqlite",
    "sqlite_file",
    "wal_checkpointer",
    "write_turn",
]


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_store_engine(
    url: str, *, sqlite_synchronous: str = "FULL", background_checkpoints: bool = False
) -> Engine:
    """Create the engine for `url`: SQLite in WAL mode, or PostgreSQL through psycopg 3.

    With `background_checkpoints` (the server and the worker), a SQLite file's WAL is
    checkpointed by a thread of its own (`WalCheckpointer`), not by the commits."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            hide_parameters=True,  # errors and logs never show row values (personal data)
        )
        synchronous = "FULL" if sqlite_synchronous.upper() == "FULL" else "NORMAL"
        checkpointer = None
        path = sqlite_file(engine)
        if background_checkpoints and path is not None:
            checkpointer = _checkpointers[engine] = _background_checkpoints(
                engine, path, synchronous
            )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when transactions begin.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            if checkpointer is not None:
                cursor.execute(f"PRAGMA wal_autocheckpoint={checkpointer.fallback_pages}")
                cursor.execute(f"PRAGMA journal_size_limit={checkpointer.kept_bytes}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            immediate = conn.get_execution_options().get("closedloop_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            hide_parameters=True,  # errors and logs never show row values (personal data)
        )
    raise ValueError(
        f"unsupported database URL `{parsed.render_as_string(hide_password=True)}`: "
        "use `sqlite:///FILE` or `postgresql+psycopg://USER@HOST/DB`"
    )


_checkpointers: WeakKeyDictionary[Engine, WalCheckpointer] = WeakKeyDictionary()


def _background_checkpoints(engine: Engine, path: str, synchronous: str) -> WalCheckpointer:
    checkpointer = WalCheckpointer(path, synchronous=synchronous)
    # Every commit of the engine wakes the checkpointer; the writers' autocommit statements
    # (the ingest path) are caught by its interval.
    event.listen(engine, "commit", lambda _conn: checkpointer.notify())
    event.listen(engine, "engine_disposed", lambda _engine: checkpointer.stop())
    return checkpointer


def wal_checkpointer(engine: Engine) -> WalCheckpointer | None:
    """The engine's background checkpointer, if it has one."""
    return _checkpointers.get(engine)


def sqlite_file(engine: Engine) -> str | None:
    """The file of a SQLite store; None for PostgreSQL and for an in-memory store (where each
    connection opens a store of its own)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return database


def is_sqlite(engine_or_conn: Engine | sa.Connection) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def is_postgres(engine_or_conn: Engine | sa.Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


@contextmanager
def begin_write(engine: Engine, *, derived: bool = False) -> Iterator[sa.Connection]:
    """A transaction that reads, then writes. On SQLite it takes the write lock at its start
    (`BEGIN IMMEDIATE`, waiting up to the busy timeout): a plain transaction that read first
    cannot become a writer once another connection committed, and fails at once. With
    `derived`, it writes only state derived again from the log, and commits without a
    flush of its own (SQLite: `relaxed_sync`; PostgreSQL: `synchronous_commit` off for the
    transaction)."""
    with write_turn(engine), engine.connect() as conn:
        conn.execution_options(closedloop_write=True)
        with relaxed_sync(conn) if derived else nullcontext(), conn.begin():
            if derived and conn.dialect.name == "postgresql":
                # The same for PostgreSQL's commit (`relaxed_sync`): it returns before the
                # WAL is flushed. A crash can take back only the last such commits, with the
                # positions they were derived up to, never leave a hole (the WAL is flushed
                # in order: a later durable commit makes these durable too).
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield conn


_turns: WeakKeyDictionary[Engine, threading.RLock] = WeakKeyDictionary()
_turns_lock = threading.Lock()
_TURN_WAIT = 30.0  # seconds; then SQLite's own wait (the busy timeout) decides
_appended: WeakKeyDictionary[Engine, float] = WeakKeyDictionary()  # monotonic seconds


def appending(engine: Engine, within: float = 1.0) -> bool:
    """Whether the ingest appended to `engine` in this process within `within` seconds."""
    last = _appended.get(engine)
    return last is not None and time.monotonic() - last < within


@contextmanager
def write_turn(engine: Engine, *, ingest: bool = False) -> Iterator[None]:
    """SQLite: the writers of this process take turns at the file's write lock (the
    processor's batches, the ingest's appends, the refreshes: `begin_write` and the ingest's
    autocommit inserts take it).

    SQLite's own wait for its lock (the busy handler) sleeps and tries again, up to 100 ms
    at a time, so a writer that holds the lock most of the time (the pipelined processor,
    ADR 0017) left the ingest's appends asleep through the gaps: 14 requests a second
    answered instead of 100 while a backlog drained, p99 1.2 s. A lock of the process wakes
    the next writer as soon as one is done. Writers in other processes (a `closedloop
    worker`) still meet at SQLite's lock. `ingest`: an append of the event log (`appending`
    tells when the last one was)."""
    if engine.dialect.name != "sqlite":
        yield
        return
    if ingest:
        _appended[engine] = time.monotonic()
    turn = _turns.get(engine)
    if turn is None:
        with _turns_lock:
            turn = _turns.setdefault(engine, threading.RLock())
    taken = turn.acquire(timeout=_TURN_WAIT)
    try:
        yield
    finally:
        if taken:
            turn.release()


@contextmanager
def relaxed_sync(conn: sa.Connection) -> Iterator[None]:
    """On SQLite, commit with `synchronous=NORMAL`: no fsync for this commit.

    Safe for derived state: WAL keeps the file consistent, and what is derived commits with
    the position it was derived up to (the processor's cursor, a segment's `refreshed_seq`),
    so a power loss can only take back the last commits together with their positions, and
    they are derived again from the log. The event log's own commits stay FULL (their fsync
    makes earlier WAL frames durable too).
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # noqa: S101
    before = dbapi.execute("PRAGMA synchronous").fetchone()[0]
    dbapi.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        dbapi.execute(f"PRAGMA synchronous={int(before)}")

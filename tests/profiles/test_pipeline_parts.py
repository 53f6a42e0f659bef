"""The parts the processor's pipeline stands on (ADRs 0017 and 0018): statements over a JSON
array of rows, the shortened switch interval, the writers' turns at SQLite's lock."""

from __future__ import annotations

import gc
import sqlite3
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy.engine import Engine

from closedloop import runtime, store
from closedloop.profiles.processor import _over_json, _over_json_pg, _time

_HOSTILE = [
    "plain",
    'O\'Brien "quoted" \\ backslash',
    "Zoë ☃ 🎉 Ωmega",
    "'); DROP TABLE t; --",
    "line\nbreak\ttab",
    "",
    None,
]


def _tables(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE t (k TEXT PRIMARY KEY, s TEXT, i INTEGER, f REAL, b INTEGER, n INTEGER)"
    )
    return conn


def test_json_rows_store_what_executemany_stores(tmp_path: Path) -> None:
    """Every kind of value the processor writes (text with quotes, unicode and SQL, big
    integers, floats, booleans, None) comes out of `json_each` as the driver binds it."""
    rows = [
        (f"k{n}", text, 2**62 + n, 0.1 + n / 3, n % 2 == 0, None) for n, text in enumerate(_HOSTILE)
    ]
    insert = "INSERT INTO t (k, s, i, f, b, n) VALUES (?, ?, ?, ?, ?, ?)"
    upsert = insert + " ON CONFLICT (k) DO UPDATE SET s = excluded.s, i = t.i + excluded.i"
    update = "UPDATE t SET s = ?, f = ? WHERE k = ?"
    changes = [(f"{text}!", 1 / 7, f"k{n}") for n, text in enumerate(_HOSTILE) if text]
    stored = []
    for name, as_json in (("driver", False), ("json", True)):
        conn = _tables(tmp_path / f"{name}.db")
        for statement, params in ((insert, rows), (upsert, rows[:3]), (update, changes)):
            if as_json:
                conn.execute(_over_json(statement), (orjson.dumps(params).decode(),))
            else:
                conn.executemany(statement, params)
        stored.append(conn.execute("SELECT * FROM t ORDER BY k").fetchall())
        conn.close()
    assert stored[0] == stored[1]
    assert len(stored[1]) == len(_HOSTILE)


def test_postgres_json_rows_store_what_executemany_stores(engine: Engine) -> None:
    """PostgreSQL: each value comes out of `jsonb_array_elements` cast to its column's type
    as the driver binds it: text (quotes, unicode, SQL, NUL-free control characters), JSON
    documents as their text, times with microseconds, big integers, floats (in exponent
    notation too: `jsonb` holds them as `numeric`), booleans, None."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's statements over JSON: the test above")
    texts = [t for t in _HOSTILE if t is not None]
    consent = [
        (
            f"p{n}",
            text[:64],
            n % 2 == 0,
            _time(1_790_000_000_123_457 + n * 1_000_001),
            text,
            2**62 + n,
        )
        for n, text in enumerate(texts)
    ]
    floats = [0.1, 1 / 7, 1e16, 1.5e300, 2.5e-7, -3.25e-300, 123456789.123456789, -0.0]
    written = [
        (
            n,
            f"p{n}",
            None if n % 2 else f"q{n}",
            floats[n % len(floats)] + n / 3,
            2**60 + n,
            None,
            floats[(n + 3) % len(floats)],
            None,
        )
        for n in range(len(texts))
    ]
    documents = [
        (f"p{n}", "e", text, n, orjson.dumps([2**53 + n, text, {"k": text}]).decode())
        for n, text in enumerate(texts)
    ]
    insert_documents = (
        "INSERT INTO event_tallies (profile_id, event, facet, total, recent) "
        "VALUES (%s, %s, %s, %s, %s::jsonb)"
    )
    statements = [
        (
            "INSERT INTO consent_changes (profile_id, purpose, granted, at, source, event_id) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            consent,
            "SELECT profile_id, purpose, granted, at, source, event_id FROM consent_changes",
        ),
        (
            "INSERT INTO profile_writes (seq, profile_id, merged_into, mood_k, mood_last, "
            "mood_churn, nps_score, nps_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            written,
            "SELECT * FROM profile_writes",
        ),
        (
            insert_documents,
            documents,
            "SELECT profile_id, event, facet, total, recent::text FROM event_tallies",
        ),
        (
            "UPDATE event_tallies SET facet = %s, recent = %s::jsonb WHERE profile_id = %s",
            [(f"{t}!", orjson.dumps({"t": t}).decode(), f"p{n}") for n, t in enumerate(texts)],
            "SELECT profile_id, event, facet, total, recent::text FROM event_tallies",
        ),
    ]
    for statement, rows, query in statements:
        stored = []
        for as_json in (False, True):
            with engine.begin() as conn:
                raw = conn.connection.driver_connection
                with raw.cursor() as cursor:  # type: ignore[union-attr]
                    if statement.startswith("UPDATE"):
                        cursor.executemany(insert_documents, documents)
                    if as_json:
                        cursor.execute(_over_json_pg(statement), (orjson.dumps(rows).decode(),))
                    else:
                        cursor.executemany(statement, rows)
                    cursor.execute(query + " ORDER BY 1, 2")
                    stored.append(cursor.fetchall())
                conn.rollback()
        assert stored[0] == stored[1], statement
        assert len(stored[1]) == len(rows)


def test_json_rows_are_refused_for_other_statements() -> None:
    for statement in (
        "DELETE FROM t WHERE k = ?",
        "UPDATE t SET s = ? WHERE k = ? AND s IN (SELECT s FROM t WHERE k = ?)",
    ):
        with pytest.raises(ValueError, match="one-row INSERT or UPDATE"):
            _over_json(statement)
    with pytest.raises(ValueError, match="column = "):
        _over_json_pg("UPDATE profiles SET traits = %s WHERE id IN (%s)")


def test_the_switch_interval_is_restored_after_the_last_user() -> None:
    before = sys.getswitchinterval()
    with runtime.short_switch_interval(0.0002):
        assert sys.getswitchinterval() == pytest.approx(0.0002)
        with runtime.short_switch_interval(0.001):  # never lengthened by a second user
            assert sys.getswitchinterval() == pytest.approx(0.0002)
        assert sys.getswitchinterval() == pytest.approx(0.0002)
    assert sys.getswitchinterval() == before


def test_the_collector_is_paused_over_a_drain_and_collects_the_young_between_batches() -> None:
    collected: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(seen)
    try:
        with runtime.CollectorPause(3600) as pause:
            assert not gc.isenabled()
            garbage = [[] for _ in range(5000)]  # would set off a collection if it ran
            for box in garbage:
                box.append(box)  # cycles: only the collector frees them
            del garbage
            pause.between()  # not yet an hour: nothing
            assert collected == []
            pause.seconds = 0
            pause.between()
            assert collected == [1]  # the young generations only
            assert not gc.isenabled()
        assert gc.isenabled()
        gc.disable()  # a caller that paused it already: left paused, never collected
        with runtime.CollectorPause(0) as pause:
            pause.between()
        assert not gc.isenabled() and collected == [1]
    finally:
        gc.enable()
        gc.callbacks.remove(seen)


def test_a_thread_can_only_lower_its_priority() -> None:
    seen: list[int] = []

    def work() -> None:
        start = runtime.thread_priority()
        runtime.lower_priority(start + 5)
        seen.append(runtime.thread_priority() - start)
        runtime.lower_priority(start)  # raising it back is not done (nor allowed unprivileged)
        seen.append(runtime.thread_priority() - start)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if sys.platform != "linux":
        pytest.skip("thread priorities are Linux's")
    assert seen == [5, 5]


def test_writers_of_one_process_take_turns(tmp_path: Path) -> None:
    """A writer waiting for its turn goes as soon as the one before is done (not after a
    sleep of SQLite's busy handler), and the ingest's appends are noted."""
    engine = store.create_store_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    order: list[str] = []

    def other() -> None:
        with store.write_turn(engine, ingest=True):
            order.append("append")

    try:
        assert not store.appending(engine)
        with store.write_turn(engine):
            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.05)
            order.append("batch")  # the append waits meanwhile
            with store.write_turn(engine):  # the same thread again: no deadlock
                order.append("nested")
        thread.join(timeout=5)
        assert order == ["batch", "nested", "append"]
        assert store.appending(engine)
    finally:
        engine.dispose()

"""Reading the event log in commit order: nothing skipped, nothing twice."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.errors import InvalidInputError
from closedloop.ingest import log
from closedloop.ingest.log import LogPosition, read_committed

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def _row(source_id: int, message_id: str) -> tuple[Any, ...]:
    return (source_id, message_id, "track", "E", "u", None, NOW, NOW, NOW, NOW, "{}")


def _append(engine: Engine, source_id: int, *ids: str) -> None:
    with engine.begin() as conn:
        log.append(conn, [_row(source_id, i) for i in ids])


def _read_all(engine: Engine, after: LogPosition, limit: int) -> tuple[list[str], LogPosition]:
    seen: list[str] = []
    while True:
        with engine.connect() as conn:
            page = read_committed(conn, after, limit=limit)
        if not page:
            return seen, after
        seen += [event.message_id for _, event in page]
        after = page[-1][0]


def test_reader_pages_through_the_log_in_order_once(engine: Engine) -> None:
    source = ingest.add_source(engine, "web", kind="web").source
    _append(engine, source.id, *(f"a{i:03}" for i in range(25)))
    _append(engine, source.id, *(f"b{i:03}" for i in range(10)))
    seen, position = _read_all(engine, LogPosition(), limit=7)
    assert seen == [f"a{i:03}" for i in range(25)] + [f"b{i:03}" for i in range(10)]
    _append(engine, source.id, "c000")
    more, _ = _read_all(engine, position, limit=7)
    assert more == ["c000"]


def test_reader_positions_grow(engine: Engine) -> None:
    source = ingest.add_source(engine, "web", kind="web").source
    _append(engine, source.id, "x1")
    _append(engine, source.id, "x2")
    with engine.connect() as conn:
        page = read_committed(conn, LogPosition(), limit=10)
    positions = [p for p, _ in page]
    assert positions == sorted(positions) and len(set(positions)) == 2
    if engine.dialect.name == "postgresql":
        assert positions[0].txid < positions[1].txid  # two transactions
    else:
        assert {p.txid for p in positions} == {0}


def test_reader_refuses_a_bad_limit(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(InvalidInputError):
        read_committed(conn, LogPosition(), limit=0)


def test_late_commit_is_waited_for_not_skipped(engine: Engine) -> None:
    """PostgreSQL: an event inserted first but committed last is still read, and in order."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: id order is commit order")
    source = ingest.add_source(engine, "web", kind="web").source
    _append(engine, source.id, "before")
    seen, position = _read_all(engine, LogPosition(), limit=100)
    assert seen == ["before"]

    inserted = threading.Event()
    release = threading.Event()

    def slow_writer() -> None:
        with engine.begin() as conn:
            log.append(conn, [_row(source.id, "late")])
            inserted.set()
            release.wait(timeout=30)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert inserted.wait(timeout=30)
        _append(engine, source.id, "after")  # commits while "late" is still open
        waiting, same_position = _read_all(engine, position, limit=100)
        assert waiting == []  # "after" is held back until "late" commits, not read past it
        assert same_position == position
    finally:
        release.set()
        writer.join(timeout=30)
    seen, _ = _read_all(engine, position, limit=100)
    assert seen == ["late", "after"]

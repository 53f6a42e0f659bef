"""A person's segment history: on SQLite through the batched index by profile up to its mark
and a walk of the changes past it (`segments.history`, ADR 0016); on PostgreSQL through
the index on `segment_changes.profile_id`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from closedloop import clock, ingest, privacy, segments
from closedloop.privacy.registry import REGISTRY, subject_of
from closedloop.segments._tables import segment_changes, segment_changes_by_profile
from closedloop.segments.history import changes_of, index_changes, indexed_upto, unindexed
from closedloop.store import begin_write
from tests.helpers import basic, query_plan
from tests.profiles.conftest import Log
from tests.segments.test_sql import _shop


def _history(log: Log, pid: str) -> list[tuple[str, str]]:
    c = segment_changes.c
    with log.engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.segment, c.change).where(changes_of(conn, [pid])).order_by(c.id)
        )
        return [(segment, change) for segment, change in rows]


def _everyones(log: Log) -> dict[str, list[tuple[str, str]]]:
    c = segment_changes.c
    with log.engine.connect() as conn:
        rows = conn.execute(sa.select(c.profile_id, c.segment, c.change).order_by(c.id))
        found: dict[str, list[tuple[str, str]]] = {}
        for pid, segment, change in rows:
            found.setdefault(pid, []).append((segment, change))
        return found


def _gold(client: TestClient, source: ingest.NewSourceKey, log: Log, headers: Any) -> str:
    _shop(client, source, log)
    made = client.post(
        "/v1/segments", json={"name": "gold", "condition": 'trait plan = "gold"'}, headers=headers
    )
    assert made.status_code == 201
    ben = {"type": "identify", "userId": "ben", "traits": {"plan": "gold"}}
    client.post("/v1/batch", json={"batch": [ben]}, headers=basic(source.write_key))
    log.process()
    assert segments.refresh(log.engine, log.settings, names=["gold"], incremental=True).entered
    pid = log.profile_of("user_id", "ben")
    assert pid is not None
    return pid


def test_a_persons_history_before_and_after_the_mark_moves(
    quiet_client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    """Each person's changes are found whether the batched index holds them yet or not, the
    same as a walk of every change finds them; moving the mark adds each change once."""
    ben = _gold(quiet_client, source, log, admin_headers)
    sqlite = log.engine.dialect.name == "sqlite"
    with log.engine.connect() as conn:
        waiting = unindexed(conn)
        mark = indexed_upto(conn)
    # the save's full refresh moved the mark; ben's entry came after it
    assert (waiting >= 1 and mark is not None and mark > 0) if sqlite else (mark is None)
    assert ("gold", "entered") in _history(log, ben)
    everyone = _everyones(log)
    assert all(_history(log, pid) == rows for pid, rows in everyone.items())
    moved = segments.index_history(log.engine, after=0)
    assert moved == (waiting if sqlite else 0)
    assert segments.index_history(log.engine, after=0) == 0  # nothing left past the mark
    with log.engine.connect() as conn:
        assert unindexed(conn) == 0
        indexed = conn.execute(
            sa.select(sa.func.count()).select_from(segment_changes_by_profile)
        ).scalar_one()
        total = conn.execute(sa.select(sa.func.count()).select_from(segment_changes)).scalar_one()
    assert indexed == (total if sqlite else 0)
    assert all(_history(log, pid) == rows for pid, rows in everyone.items())
    # a later change is past the mark again, and found
    back = {"type": "identify", "userId": "ben", "traits": {"plan": "basic"}}
    quiet_client.post("/v1/batch", json={"batch": [back]}, headers=basic(source.write_key))
    log.process()
    assert segments.refresh(log.engine, log.settings, names=["gold"], incremental=True).exited
    assert _history(log, ben)[-2:] == [("gold", "entered"), ("gold", "exited")]
    with begin_write(log.engine) as conn:
        assert index_changes(conn) == (1 if sqlite else 0)


def test_the_history_of_some_people_reads_their_keys_not_every_change(log: Log) -> None:
    """SQLite: the batched index by its key, the changes by theirs (the indexed ones one by
    one, those past the mark a range); no walk of the whole history."""
    with log.engine.connect() as conn:
        c = segment_changes.c
        plan = query_plan(conn, sa.select(c.id).where(changes_of(conn, ["p_a", "p_b"])))
    if log.engine.dialect.name == "sqlite":
        assert "pk_segment_changes_by_profile" in plan or "PRIMARY KEY (profile_id=?" in plan, plan
        assert "INTEGER PRIMARY KEY (rowid>?)" in plan, plan
        assert "SCAN segment_changes" not in plan, plan
    else:
        assert "ix_segment_changes_profile_id" in plan, plan


def test_erasure_and_retention_reach_the_history_on_both_sides_of_the_mark(
    quiet_client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    """Erasure deletes a person's changes the batched index holds and those past its mark,
    and her rows of the index; retention deletes old changes with their rows of the index."""
    ben = _gold(quiet_client, source, log, admin_headers)
    segments.refresh(log.engine, log.settings)  # (moves the mark past ben's entry)
    back = {"type": "identify", "userId": "ben", "traits": {"plan": "basic"}}
    quiet_client.post("/v1/batch", json={"batch": [back]}, headers=basic(source.write_key))
    log.process()
    segments.refresh(log.engine, log.settings, names=["gold"], incremental=True)
    assert len(_history(log, ben)) >= 2  # one indexed, one past the mark (SQLite)
    entries = {e.table.name: e for e in REGISTRY}
    with begin_write(log.engine) as conn:
        subject = subject_of(conn, [ben])
        export, erase = entries["segment_changes"].export, entries["segment_changes"].erase
        assert export is not None and erase is not None
        exported = export(conn, subject)
        assert [(r["segment"], r["change"]) for r in exported] == _history(log, ben)
        erase(conn, subject)
        index_erase = entries["segment_changes_by_profile"].erase
        assert index_erase is not None
        index_erase(conn, subject)
    assert _history(log, ben) == []
    by = segment_changes_by_profile.c
    with log.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).where(by.profile_id == ben)).scalar_one()
    assert left == 0
    # retention: every change is old a year later; the index keeps no row for a gone change
    later = clock.now() + timedelta(days=400)
    settings = log.settings.model_copy(
        update={"privacy": log.settings.privacy.model_copy(update={"history_days": 30})}
    )
    deleted = privacy.apply_retention(log.engine, settings, now=later)
    assert deleted["segment_changes"] > 0
    with log.engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(segment_changes_by_profile))
        assert rows.scalar_one() == 0


def test_the_mark_moves_in_batches_and_the_page_cache_is_given_back(
    quiet_client: TestClient,
    source: ingest.NewSourceKey,
    log: Log,
    admin_headers: dict[str, str],
    monkeypatch: Any,
) -> None:
    """SQLite: a transaction of `index_changes` covers at most `batch` change ids, with a
    larger page cache only meanwhile; `index_history` runs batches until none waits."""
    from closedloop.segments import history

    _gold(quiet_client, source, log, admin_headers)
    if log.engine.dialect.name != "sqlite":
        with begin_write(log.engine) as conn:
            assert index_changes(conn, batch=1) == 0
        return
    with log.engine.connect() as conn:
        waiting, mark = unindexed(conn), indexed_upto(conn)
    assert waiting >= 1 and mark is not None
    with begin_write(log.engine) as conn:
        before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
        assert index_changes(conn, batch=1) <= 1
        assert indexed_upto(conn) == mark + 1
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == before
    with begin_write(log.engine) as conn:  # more changes past the mark
        for n in range(5):
            conn.execute(
                segment_changes.insert().values(
                    segment="gold", profile_id=f"p_{n}", change="entered", at=clock.now(),
                    reason="test",
                )
            )  # fmt: skip
    calls: list[int] = []
    real = history.index_changes

    def one_id(conn: sa.Connection, *, batch: int = 1) -> int:
        calls.append(batch)
        return real(conn, batch=1)

    monkeypatch.setattr(segments.store, "index_changes", one_id)
    with log.engine.connect() as conn:
        waiting = unindexed(conn)
    assert waiting >= 5
    everyone = _everyones(log)
    assert segments.index_history(log.engine, after=0) == waiting
    assert len(calls) == waiting  # one id a transaction
    with log.engine.connect() as conn:
        assert unindexed(conn) == 0
    assert all(_history(log, pid) == rows for pid, rows in everyone.items())

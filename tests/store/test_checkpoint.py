"""SQLite's WAL checkpointed by a thread of its own (the server and the worker)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from closedloop import store
from closedloop.store._checkpoint import WalCheckpointer


def _table(engine: sa.Engine) -> sa.Table:
    table = sa.Table(
        "filler",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.Text),
    )
    table.create(engine)
    return table


def _autocheckpoint(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def test_commits_leave_the_wal_to_the_checkpointer_thread(tmp_path: Path) -> None:
    path = tmp_path / "bg.db"
    engine = store.create_store_engine(f"sqlite:///{path}", background_checkpoints=True)
    checkpointer = store.wal_checkpointer(engine)
    assert checkpointer is not None
    assert _autocheckpoint(engine) == checkpointer.fallback_pages  # commits do not checkpoint
    with engine.connect() as conn:  # after a restart the WAL file keeps a cycle's size
        kept = conn.exec_driver_sql("PRAGMA journal_size_limit").scalar_one()
        assert kept == 320 * 2**20 >= checkpointer.restart_pages * 4096
    table = _table(engine)
    for batch in range(5):
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"v": f"{batch}-{n}-" + "x" * 400} for n in range(300)])
    deadline = time.monotonic() + 10
    while checkpointer.passive == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert checkpointer.passive > 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1_500
    engine.dispose()
    thread = checkpointer._thread
    assert thread is not None and not thread.is_alive()


def test_a_wal_past_its_limit_is_restarted_so_the_next_writer_starts_it_again(
    tmp_path: Path,
) -> None:
    """Passive checkpoints alone never rewind a WAL that writers keep appending to; past
    `restart_pages` the checkpointer restarts it."""
    path = tmp_path / "restart.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, v TEXT)")
    checkpointer = WalCheckpointer(str(path), synchronous="NORMAL", restart_pages=200)
    own = sqlite3.connect(path, isolation_level=None)

    def write(rows: int) -> None:
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO filler (v) VALUES (?)", [("x" * 400,)] * rows)
        writer.execute("COMMIT")

    def frames() -> int:
        return int(own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    write(300)  # about 35 pages: under the limit
    checkpointer.checkpoint(own)
    assert checkpointer.restarts == 0
    for _ in range(10):
        write(300)
    assert frames() > 200
    checkpointer.checkpoint(own)
    assert checkpointer.restarts == 1
    write(10)
    assert frames() < 10  # the WAL started again from its first frame
    assert writer.execute("SELECT count(*) FROM filler").fetchone()[0] == 3_310
    writer.close()
    own.close()


def test_without_the_checkpointer_commits_checkpoint_as_sqlite_does(tmp_path: Path) -> None:
    engine = store.create_store_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    assert store.wal_checkpointer(engine) is None
    assert _autocheckpoint(engine) == 1000
    engine.dispose()
    memory = store.create_store_engine("sqlite://", background_checkpoints=True)
    assert store.wal_checkpointer(memory) is None  # nothing to checkpoint
    memory.dispose()


def test_a_stopped_checkpointer_starts_no_thread(tmp_path: Path) -> None:
    engine = store.create_store_engine(
        f"sqlite:///{tmp_path / 'stopped.db'}", background_checkpoints=True
    )
    checkpointer = store.wal_checkpointer(engine)
    assert checkpointer is not None
    engine.dispose()
    table = _table(engine)  # the engine still works after dispose (a new pool)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"v": "x"}])
    assert checkpointer._thread is None

"""WAL file kept or grown (ADR 0014, addendum 2026-12-06): the same write transactions on a
SQLite file whose WAL file is kept at its size (writers write over its pages) against one
whose WAL file was emptied (writers grow it page by page), in turns, on the server's engine.

The store: `--rows` rows with two random keys (a primary key and an index, as
`segment_members`), filled once. Each transaction inserts `--writes` rows with random keys
and deletes a fifth as many: each row a random leaf page of both keys, so some 2.5 pages of
4 KB a row go into the WAL, as a segment refresh or a processor batch at 1M profiles writes
them.

1. One transaction, timed, after the WAL was checkpointed either by `TRUNCATE` (the file
   emptied: the baseline) or by `RESTART` (the file kept, as the server's engine keeps it).
2. As the server writes: `--cycle` transactions one after the other, with the WAL
   checkpointed by the engine's thread, once with SQLite's `journal_size_limit` at 64 MB
   (the setting before) and once at the engine's (320 MB), in turns.

Run: `.venv/bin/python bench/wal_bench.py [--rows 1000000] [--writes 3000] [--rounds 5]`
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from closedloop import store

_CREATE = (
    "CREATE TABLE members (segment TEXT NOT NULL, profile_id TEXT NOT NULL, "
    "entered_at INTEGER NOT NULL, PRIMARY KEY (segment, profile_id))",
    "CREATE INDEX ix_members_profile_id ON members (profile_id, segment)",
)
_SEGMENTS = ("positive", "negative", "promoters", "detractors", "churn-risk")


def _key(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_SEGMENTS), f"p_{rng.getrandbits(96):024x}"


def fill(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in _CREATE:
        db.execute(statement)
    rng = random.Random(3)
    for _ in range(0, rows, 100_000):
        db.executemany(
            "INSERT OR IGNORE INTO members VALUES (?, ?, 0)",
            [_key(rng) for _ in range(100_000)],
        )
        db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def existing(engine: sa.Engine, rng: random.Random, count: int) -> list[tuple[str, str]]:
    """`count` stored keys at random places of the profile index (read before the timing)."""
    with engine.connect() as conn:
        found = {
            tuple(row)
            for _ in range(count)
            for row in conn.exec_driver_sql(
                "SELECT segment, profile_id FROM members WHERE profile_id >= ? "
                "ORDER BY profile_id LIMIT 1",
                (f"p_{rng.getrandbits(96):024x}",),
            )
        }
    return sorted(found)


def transaction(engine: sa.Engine, rng: random.Random, writes: int) -> tuple[float, float]:
    """One write transaction (inserts of new keys, deletes of stored ones, in key order):
    wall ms and the process's system-call ms."""
    gone = existing(engine, rng, writes // 5)
    new = sorted(_key(rng) for _ in range(writes))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with store.begin_write(engine, derived=True) as conn:
        conn.exec_driver_sql("INSERT OR IGNORE INTO members VALUES (?, ?, 1)", new)
        conn.exec_driver_sql("DELETE FROM members WHERE segment = ? AND profile_id = ?", gone)
    elapsed = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_SELF)
    return elapsed, (after.ru_stime - before.ru_stime) * 1000


def _checkpoint(engine: sa.Engine, mode: str) -> None:
    raw = engine.raw_connection()
    try:
        raw.cursor().execute(f"PRAGMA wal_checkpoint({mode})")
    finally:
        raw.close()


def _wal_mb(path: Path) -> float:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size / 2**20 if wal.exists() else 0.0


def case_one(path: Path, args: argparse.Namespace) -> None:
    """1. One transaction after `TRUNCATE` (the file grows) or `RESTART` (the file kept)."""
    # (no thread copying pages meanwhile, and no commit checkpoints: only `_checkpoint`)
    engine = store.create_store_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _manual(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    rng = random.Random(11)
    transaction(engine, rng, args.writes * 4)  # the WAL file grows to its working size once
    times: dict[str, list[tuple[float, float]]] = {"TRUNCATE": [], "RESTART": []}
    for _ in range(args.rounds):
        for mode, seen in times.items():
            _checkpoint(engine, mode)
            size = _wal_mb(path)
            seen.append(transaction(engine, rng, args.writes))
            print(
                f"  after {mode}: WAL file {size:.0f} MB before, {_wal_mb(path):.0f} MB after: "
                f"{seen[-1][0]:.1f} ms ({seen[-1][1]:.1f} ms in system calls)"
            )
    engine.dispose()
    grown, kept = (statistics.median(t for t, _ in times[m]) for m in ("TRUNCATE", "RESTART"))
    print(
        f"one transaction of {args.writes:,} inserts and {args.writes // 5:,} deletes, median "
        f"of {args.rounds}: WAL file emptied (baseline) {grown:.1f} ms, kept {kept:.1f} ms: "
        f"{kept / grown:.2f} of the baseline"
    )


def case_cycle(path: Path, args: argparse.Namespace) -> None:
    """2. `--cycle` transactions in a row with the engine's checkpointer thread, the WAL file
    limited to 64 MB (the setting before) or to the engine's limit, in turns. A connection
    stays open throughout (as the server's pool does), so the WAL file outlives each run's
    engine, and two transactions before each run bring it to that setting's steady size."""
    probe = store.create_store_engine(f"sqlite:///{path}", background_checkpoints=True)
    checkpointer = store.wal_checkpointer(probe)
    assert checkpointer is not None
    kept = checkpointer.kept_bytes  # the engine's limit
    probe.dispose()
    results: dict[int, list[float]] = {64 * 2**20: [], kept: []}
    rng = random.Random(13)
    holder = sqlite3.connect(path)
    holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
    for _ in range(args.rounds):
        for limit, seen in results.items():
            engine = store.create_store_engine(f"sqlite:///{path}", background_checkpoints=True)

            @sa.event.listens_for(engine, "connect")
            def _limit(dbapi_connection: Any, _record: Any, limit: int = limit) -> None:
                dbapi_connection.execute(f"PRAGMA journal_size_limit={limit}")

            for _ in range(2):
                transaction(engine, rng, args.writes * 4)
            sizes = []
            started = time.perf_counter()
            for _ in range(args.cycle):
                transaction(engine, rng, args.writes * 4)
                sizes.append(_wal_mb(path))
            seen.append((time.perf_counter() - started) * 1000)
            engine.dispose()  # (stops the checkpointer thread)
            print(
                f"  journal_size_limit {limit // 2**20} MB: {args.cycle} transactions in "
                f"{seen[-1]:,.0f} ms (WAL file {min(sizes):.0f} to {max(sizes):.0f} MB)"
            )
    holder.close()
    before, now = (statistics.median(results[k]) for k in results)
    print(
        f"{args.cycle} transactions of {args.writes * 4:,} inserts, median of {args.rounds}: "
        f"limit 64 MB (baseline) {before:,.0f} ms, {kept // 2**20} MB {now:,.0f} ms: "
        f"{now / before:.2f} of the baseline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycle", type=int, default=20)
    parser.add_argument("--only", choices=("one", "cycle"), default=None)
    args = parser.parse_args()
    print(
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    with tempfile.TemporaryDirectory(prefix="closedloop-walbench-") as tmp:
        path = Path(tmp) / "wal.db"
        started = time.perf_counter()
        fill(path, args.rows)
        print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.0f} s")
        if args.only in (None, "one"):
            case_one(path, args)
        if args.only in (None, "cycle"):
            case_cycle(path, args)


if __name__ == "__main__":
    main()

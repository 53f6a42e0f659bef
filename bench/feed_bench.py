"""Feed benchmark: 1,000,000 segment members x 8 columns to CSV, against DuckDB's
`COPY (query) TO` the same CSV format on the same data, measured in the same run.

The store holds 1M profiles with master data and consent, all members of one segment. The
feed (8 columns: customer key, salutation from the gender, first and last name, street,
postal code, city, e-mail; `;`-separated, UTF-8) runs in a child process, whose peak memory
(VmHWM) is read when it ends (target: at most 300 MB), twice a round: as `closedloop feeds
run` runs it (the run starts its worker processes, about a second each), then as a running
hub runs it on schedule (its worker processes started ahead: `feeds.keep_workers_ready`).
The second is the figure compared; both are printed.

DuckDB gets the same rows (the same JSON documents) in a table of its own, and writes the
same columns (the salutation by a CASE on the gender) with `COPY (SELECT ...) TO`, once
with all cores and once with one thread.

Each round runs the feed (both ways), then DuckDB (all cores, then one thread) on the same
rows; with `--before DIR` (a checkout of earlier code, e.g. a `git worktree`) that code's
feed runs in the same round on the same store, so both meet the same phase of the
machine.

Run: `.venv/bin/python bench/feed_bench.py [--rows 1000000] [--rounds 3] [--postgres-url URL]
[--before DIR]` (`make bench` installs DuckDB; the hub does not need it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from closedloop import feeds, store
from closedloop.config import Settings
from closedloop.profiles._tables import profiles
from closedloop.segments._tables import segment_members

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
FIRST = ["Erika", "Max", "Anna", "Jürgen", "Zoë", "Paul", "Lena", "Ömer"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"]
CITIES = [("01067", "Dresden"), ("04109", "Leipzig"), ("10115", "Berlin"), ("80331", "München")]
FEED = {
    "name": "bench",
    "source": {"segments": ["bench"]},
    "columns": [
        {"name": "customer_key", "source": "customer_key"},
        {"name": "anrede", "source": "masterdata.gender", "transforms": ["salutation"]},
        {"name": "vorname", "source": "masterdata.first_name"},
        {"name": "nachname", "source": "masterdata.last_name"},
        {"name": "strasse", "source": "masterdata.street"},
        {"name": "plz", "source": "masterdata.postal_code"},
        {"name": "ort", "source": "masterdata.city"},
        {"name": "email", "source": "masterdata.email"},
    ],
    "format": {"type": "csv", "delimiter": ";"},
    "schedule": None,
    "destination": {"type": "local", "path": "bench"},
}


def _rows(count: int) -> Any:
    rng = random.Random(7)
    for n in range(count):
        postal, city = CITIES[n % len(CITIES)]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        gender = ("female", "male", "diverse", None)[n % 4]
        masterdata = {
            "email": f"kunde{n}@example.de",
            "phone": f"+4935112{n:06d}",
            "first_name": first,
            "last_name": last,
            "gender": gender,
            "street": f"Hauptstr. {n % 200 + 1}",
            "city": city,
            "country": "DE",
            "postal_code": postal,
        }
        yield {
            "id": f"p_{n:024x}",
            "customer_key": f"v1.{n:064x}",
            "masterdata": masterdata,
            "consent": {"crm_sync": [True, 0, "bench"]},
        }


def fill(engine: sa.Engine, count: int) -> None:
    with engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        members: list[dict[str, Any]] = []
        for row in _rows(count):
            batch.append(
                {
                    "id": row["id"],
                    "merged_into": None,
                    "customer_key": row["customer_key"],
                    "user_ids": [],
                    "anonymous_ids": 0,
                    "traits": {},
                    "computed": {},
                    "consent": row["consent"],
                    "masterdata": row["masterdata"],
                    "quality": [],
                    "derived": {},
                    "created_at": NOW,
                    "updated_at": NOW,
                    "created_event_id": 0,
                    "processed_seq": 0,
                }
            )
            members.append({"segment": "bench", "profile_id": row["id"], "entered_at": NOW})
            if len(batch) >= 20_000:
                conn.execute(profiles.insert(), batch)
                conn.execute(segment_members.insert(), members)
                batch, members = [], []
        if batch:
            conn.execute(profiles.insert(), batch)
            conn.execute(segment_members.insert(), members)
        conn.execute(
            sa.text(
                "INSERT INTO segments (name, condition, tree, created_at, updated_at, "
                "refreshed_at, refreshed_seq) "
                "VALUES ('bench', 'consent crm_sync', :tree, :at, :at, :at, 0)"
            ),
            {"tree": orjson.dumps({"consent": "crm_sync"}).decode(), "at": NOW},
        )


def settings(url: str, folder: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        secret_key="bench-secret-" + "s" * 20,  # type: ignore[arg-type]
        feeds={"local_dir": folder / "exports", "staging_dir": folder / "staging"},  # type: ignore[arg-type]
    )


def child(url: str, folder: str, ready: bool) -> None:
    """Run the feed once; print seconds, rows, bytes and peak memory as JSON. `ready`: as
    in a long-running hub (serve's scheduler, `closedloop worker`), whose worker processes
    are started ahead of a big feed's run (`feeds.keep_workers_ready`: the store's last run
    was written in parts); otherwise as `closedloop feeds run`, which starts them."""
    config = settings(url, Path(folder))
    engine = store.create_store_engine(url)
    if ready:
        keep = getattr(feeds, "keep_workers_ready", None)  # (not in earlier code)
        wanted = keep(engine, config) if keep is not None else 0
        deadline = time.monotonic() + 60
        while wanted and feeds.ready_workers() < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
    started = time.perf_counter()
    run = feeds.run_now(engine, config, "bench")
    seconds = time.perf_counter() - started
    if ready and hasattr(feeds, "stop_ready_workers"):
        feeds.stop_ready_workers()
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    parts = (run.stats or {}).get("parts") or {}
    workers = int(parts.get("processes", 1)) - 1
    worker_mb = float(parts.get("worker_peak_mb") or 0)
    print(
        json.dumps(
            {
                "state": run.state,
                "error": run.error,
                "seconds": seconds,
                "rows": run.rows,
                "bytes": run.bytes,
                "peak_mb": hwm / 1024,
                "processes": workers + 1,
                "ranges": parts.get("ranges", 1),
                "worker_peak_mb": worker_mb,
                # the run's process and each worker at its peak at once (an upper bound)
                "total_peak_mb": hwm / 1024 + workers * worker_mb,
            }
        )
    )


class DuckDbBaseline:
    """The same rows in a DuckDB table (loaded once), written with `COPY (query) TO`."""

    def __init__(self, count: int, folder: Path) -> None:
        import duckdb

        self.folder = folder
        self.con = duckdb.connect()
        self.con.execute(
            "CREATE TABLE profiles (id VARCHAR, customer_key VARCHAR, masterdata JSON, "
            "consent JSON)"
        )
        self.con.execute("CREATE TABLE segment_members (segment VARCHAR, profile_id VARCHAR)")
        source = folder / "duckdb-input.csv"
        with source.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            for row in _rows(count):
                writer.writerow(
                    [
                        row["id"],
                        row["customer_key"],
                        orjson.dumps(row["masterdata"]).decode(),
                        orjson.dumps(row["consent"]).decode(),
                    ]
                )
        self.con.execute(
            "INSERT INTO profiles SELECT * FROM read_csv(?, header = false, "
            "columns = {'id': 'VARCHAR', 'customer_key': 'VARCHAR', 'masterdata': 'JSON', "
            "'consent': 'JSON'})",
            [str(source)],
        )
        self.con.execute("INSERT INTO segment_members SELECT 'bench', id FROM profiles")
        source.unlink()

    def copy(self, threads: int | None) -> dict[str, Any]:
        self.con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
        target = self.folder / f"duckdb-{threads or 'all'}.csv"
        query = """
            COPY (
              SELECT p.customer_key,
                     CASE json_extract_string(p.masterdata, '$.gender')
                       WHEN 'female' THEN 'Frau' WHEN 'male' THEN 'Herr' ELSE '' END AS anrede,
                     json_extract_string(p.masterdata, '$.first_name') AS vorname,
                     json_extract_string(p.masterdata, '$.last_name') AS nachname,
                     json_extract_string(p.masterdata, '$.street') AS strasse,
                     json_extract_string(p.masterdata, '$.postal_code') AS plz,
                     json_extract_string(p.masterdata, '$.city') AS ort,
                     json_extract_string(p.masterdata, '$.email') AS email
              FROM segment_members m JOIN profiles p ON p.id = m.profile_id
              WHERE m.segment = 'bench'
                AND json_extract(p.consent, '$.crm_sync[0]')::BOOLEAN
              ORDER BY p.id
            ) TO '{target}' (HEADER, DELIMITER ';')
        """.replace("{target}", str(target))
        started = time.perf_counter()
        self.con.execute(query)
        seconds = time.perf_counter() - started
        lines = sum(1 for _ in target.open("rb")) - 1
        size = target.stat().st_size
        target.unlink()
        return {"seconds": seconds, "rows": lines, "bytes": size}


def run_feed(
    url: str, folder: Path, code: Path | None = None, *, ready: bool = False
) -> dict[str, Any]:
    """The feed in a child process, on this checkout's code or on the `src` of `code`."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code / "src")
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, str(folder), *(["--ready"] if ready else [])],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _rate(result: dict[str, Any]) -> float:
    return float(result["rows"]) / float(result["seconds"])


def fresh_schema(base: str, schema: str) -> str:
    """A URL whose tables live in `schema`, dropped and created again (never `public`)."""
    url = sa.make_url(base)
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="feed and DuckDB, back to back")
    parser.add_argument("--postgres-url", default=os.environ.get("CLOSEDLOOP_TEST_POSTGRES_URL"))
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a checkout of earlier code: its feed runs in each round too (same store)",
    )
    parser.add_argument("--child", nargs=2, metavar=("URL", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--ready", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.ready)
        return
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}; rows: {args.rows:,}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results: dict[str, Any] = {}
        backends = [("sqlite", f"sqlite:///{folder}/bench.db")]
        if args.postgres_url:
            backends.append(("postgres", fresh_schema(args.postgres_url, "bench_feeds")))
        duck = DuckDbBaseline(args.rows, folder)
        for name, url in backends:
            engine = store.create_store_engine(url)
            store.upgrade(engine)
            started = time.perf_counter()
            fill(engine, args.rows)
            feeds.save_feed(engine, FEED, create=True)
            # The steady state of a running hub after such a load: SQLite's WAL checkpointed
            # (the processor's commits checkpoint as they go; the fill is one transaction of
            # 1 GB), PostgreSQL's rows vacuumed and analysed (what autovacuum does) and its
            # dirty pages written (what the checkpointer does within minutes).
            if engine.dialect.name == "postgresql":
                with engine.connect() as conn:
                    auto = conn.execution_options(isolation_level="AUTOCOMMIT")
                    auto.execute(sa.text("VACUUM ANALYZE"))
                    auto.execute(sa.text("CHECKPOINT"))
            else:
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
            print(f"{name}: filled in {time.perf_counter() - started:.1f} s")
            for round_ in range(1, args.rounds + 1):
                figures: dict[str, Any] = {"cold": run_feed(url, folder)}
                figures["feed"] = run_feed(url, folder, ready=True)
                for kind in ("cold", "feed"):
                    assert figures[kind]["state"] == "succeeded", figures[kind]
                if args.before is not None:
                    figures["before"] = run_feed(url, folder, args.before)
                    assert figures["before"]["bytes"] == figures["feed"]["bytes"], figures
                figures["duckdb threads=all"] = duck.copy(None)
                figures["duckdb threads=1"] = duck.copy(1)
                assert figures["duckdb threads=all"]["rows"] == figures["feed"]["rows"], figures
                results[f"{name} round {round_}"] = figures
                feed, best = figures["feed"], figures["duckdb threads=all"]
                line = (
                    f"{name} round {round_}: feed {feed['rows']:,} rows in "
                    f"{feed['seconds']:.2f} s = {_rate(feed):,.0f} rows/s, "
                    f"{feed['bytes'] / 1e6:.1f} MB, {feed.get('processes', 1)} processes, "
                    f"peak {feed['peak_mb']:.0f} MB (all processes at most "
                    f"{feed.get('total_peak_mb', feed['peak_mb']):.0f} MB); "
                    f"DuckDB (all cores) {best['seconds']:.2f} s = {_rate(best):,.0f} rows/s, "
                    f"(1 thread) {_rate(figures['duckdb threads=1']):,.0f} rows/s; "
                    f"ratio {_rate(feed) / _rate(best):.2f}; started by the run (as "
                    f"`closedloop feeds run`) {figures['cold']['seconds']:.2f} s, ratio "
                    f"{_rate(figures['cold']) / _rate(best):.2f}"
                )
                if args.before is not None:
                    before = figures["before"]
                    line += (
                        f"; before {before['seconds']:.2f} s = {_rate(before):,.0f} rows/s "
                        f"(ratio {_rate(before) / _rate(best):.2f})"
                    )
                print(line, flush=True)
        out = Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        (out / "feeds.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

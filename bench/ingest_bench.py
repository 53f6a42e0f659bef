"""Ingest benchmarks, each against a baseline measured in the same run.

1. `/v1/batch`, 100 events a request, 4 concurrent senders (wrk), durable acks, vs raw
   `sqlite3.executemany` of the same rows into the same table with the same indexes.
2. `/v1/track` single events vs a bare endpoint on the same stack (FastAPI on uvicorn);
   p99 latency at half the measured load.
3. The store's bulk append vs raw `executemany` (SQLite) and raw `COPY` (PostgreSQL).
4. Peak memory (VmHWM) of the server process under the batch benchmark.

Needs `wrk` (Debian package). Run: `make bench` or `.venv/bin/python bench/ingest_bench.py`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from closedloop import ingest, store
from closedloop.config import IngestSettings
from closedloop.ingest._tables import EVENT_COLUMNS
from closedloop.ingest.committer import Committer
from closedloop.ingest.messages import normalise_message
from closedloop.store._types import to_epoch_us

ROOT = Path(__file__).resolve().parent
KEY = "wk_bench-" + "k" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_message(i: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": f"user-{i % 5000}",
        "anonymousId": f"anon-{i % 7000:08d}",
        "timestamp": "2026-11-22T10:50:31.543+00:00",
        "integrations": {},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "10.0.0.1"},
        "properties": {"product_id": f"P{i % 900}", "category": "Laufschuhe", "price": 129.95},
    }


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def run_wrk(
    url: str, body: bytes, *, connections: int, seconds: int, delay_ms: float = 0
) -> dict[str, Any]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    body_path = Path(tempfile.mkstemp(suffix=".json")[1])
    body_path.write_bytes(body)
    auth = base64.b64encode(f"{KEY}:".encode()).decode()
    script.write_text(
        f"""
local f = io.open("{body_path}", "rb"); local body = f:read("*all"); f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic {auth}"
{"function delay() return " + str(round(delay_ms)) + " end" if delay_ms else ""}
done = function(summary, latency, requests)
  io.write(string.format("JSON {{\\"requests\\": %d, \\"seconds\\": %f, " ..
    "\\"non2xx\\": %d, \\"errors\\": %d, \\"p50\\": %f, \\"p99\\": %f}}\\n",
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""
    )
    wrk = shutil.which("wrk") or "wrk"
    out = subprocess.run(
        [wrk, "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script.unlink()
    body_path.unlink()
    match = re.search(r"^JSON (.*)$", out, re.MULTILINE)
    if not match:
        raise RuntimeError(out)
    result: dict[str, Any] = json.loads(match.group(1))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepared_rows(count: int, source_id: int, *, prefix: str) -> list[tuple[Any, ...]]:
    limits = IngestSettings()
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        message = sample_message(i)
        message["messageId"] = f"{prefix}-{i}"
        rows.append(
            normalise_message(
                message, call_type=None, limits=limits, received_at=now, sent_at=now
            ).as_tuple(source_id)
        )
    return rows


def sqlite_raw_executemany(path: Path, rows: list[tuple[Any, ...]], chunk: int) -> float:
    """Rows/s of plain sqlite3 executemany, WAL + synchronous FULL, one commit per chunk."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    marks = ", ".join("?" for _ in EVENT_COLUMNS)
    sql = (
        f"INSERT INTO events ({cols}) VALUES ({marks}) "  # noqa: S608 - our own column names
        "ON CONFLICT (source_id, message_id) DO NOTHING"
    )
    # The table's own representation (epoch microseconds), converted before the clock starts.
    converted = [tuple(to_epoch_us(v) if isinstance(v, datetime) else v for v in r) for r in rows]
    started = time.perf_counter()
    for i in range(0, len(converted), chunk):
        con.execute("BEGIN")
        con.executemany(sql, converted[i : i + chunk])
        con.execute("COMMIT")
    elapsed = time.perf_counter() - started
    con.close()
    return len(rows) / elapsed


def store_append(engine: sa.Engine, rows: list[tuple[Any, ...]], chunk: int) -> float:
    """Rows/s of the store's append as the server uses it: the group committer (SQLite: one
    statement that is its own transaction; PostgreSQL: COPY in a transaction)."""
    committer = Committer(engine, retry_after=1)
    started = time.perf_counter()
    for i in range(0, len(rows), chunk):
        committer.commit([(rows[i : i + chunk], [])])
    return len(rows) / (time.perf_counter() - started)


def postgres_raw_copy(engine: sa.Engine, rows: list[tuple[Any, ...]], chunk: int) -> float:
    cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    started = time.perf_counter()
    for i in range(0, len(rows), chunk):
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:
                for row in rows[i : i + chunk]:
                    copy.write_row(row)
    return len(rows) / (time.perf_counter() - started)


def fresh_sqlite_file(workdir: Path, name: str) -> Path:
    """A new store file with the schema (for the raw baselines)."""
    _, engine = fresh_sqlite(workdir, name)
    engine.dispose()
    return workdir / name


class Hub:
    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        self.pid = pid

    def accepted(self) -> float:
        metrics = httpx.get(f"{self.url}/metrics").text
        found = re.search(r'closedloop_events_accepted_total\{source="bench"\} (\S+)', metrics)
        return float(found.group(1)) if found else 0.0


@contextmanager
def hub_server(workdir: Path, name: str, *, with_processor: bool) -> Iterator[Hub]:
    """`closedloop serve` on a fresh SQLite store with the bench source."""
    url, engine = fresh_sqlite(workdir, name)
    ingest.add_source(engine, "bench", kind="server", write_key=KEY)
    engine.dispose()
    port = free_port()
    env = {"PATH": os.environ["PATH"], "CLOSEDLOOP_DATABASE_URL": url}
    if "PYTHONPATH" in os.environ:  # another checkout's code, for runs in turn with it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env["CLOSEDLOOP_LOG_LEVEL"] = "warning"
    # Ingest alone, as a deployment with `closedloop worker` processes runs it; the
    # processor has its own benchmark (bench/process_bench.py).
    env["CLOSEDLOOP_PROCESSOR__EMBEDDED"] = "true" if with_processor else "false"
    server = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "serve", "--port", str(port)], cwd=workdir, env=env
    )
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", server)
        yield Hub(f"http://127.0.0.1:{port}", server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)


def fresh_sqlite(workdir: Path, name: str) -> tuple[str, sa.Engine]:
    url = f"sqlite:///{workdir / name}"
    engine = store.create_store_engine(url)
    store.upgrade(engine)
    return url, engine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8, help="Length of each wrk run.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of figure + baseline.")
    parser.add_argument("--postgres-url", default=os.environ.get("CLOSEDLOOP_TEST_POSTGRES_URL"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--with-processor",
        action="store_true",
        help="Run the embedded processor in the server (default: ingest alone).",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="closedloop-bench-"))
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}"
        ),
    }

    # --- HTTP. The machine is shared and its speed drifts by 20 % or more from one minute to
    # the next, so each round runs a figure and its baseline back to back, on a fresh store,
    # and the report takes the median of the rounds' ratios.
    batch_body = orjson.dumps({"batch": [sample_message(i) for i in range(100)]})
    track_body = orjson.dumps(sample_message(1))
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bare_app.py"), str(bare_port)])
    rounds: list[dict[str, Any]] = []
    try:
        wait_up(f"http://127.0.0.1:{bare_port}/docs", bare)
        for number in range(args.rounds):
            with hub_server(
                workdir, f"round{number}.db", with_processor=args.with_processor
            ) as hub:
                batch = run_wrk(
                    f"{hub.url}/v1/batch", batch_body, connections=4, seconds=args.seconds
                )
                stored = hub.accepted()
                peak = peak_rss_mb(hub.pid)
                track = run_wrk(
                    f"{hub.url}/v1/track", track_body, connections=16, seconds=args.seconds
                )
            bare_run = run_wrk(
                f"http://127.0.0.1:{bare_port}/v1/track",
                track_body,
                connections=16,
                seconds=args.seconds,
            )
            same = prepared_rows(int(stored), 1, prefix=f"h{number}")
            raw100 = sqlite_raw_executemany(fresh_sqlite_file(workdir, f"r{number}a.db"), same, 100)
            raw1000 = sqlite_raw_executemany(
                fresh_sqlite_file(workdir, f"r{number}b.db"), same, 1000
            )
            del same
            rounds.append(
                {
                    "batch_events_per_s": batch["rps"] * 100,
                    "batch_p99_ms": batch["p99"],
                    "batch_non2xx": batch["non2xx"] + batch["errors"],
                    "events_acked": batch["requests"] * 100,
                    "events_stored": stored,
                    "raw_executemany_100_per_commit_same_rows": raw100,
                    "raw_executemany_1000_per_commit_same_rows": raw1000,
                    "batch_vs_raw_100": batch["rps"] * 100 / raw100,
                    "batch_vs_raw_1000": batch["rps"] * 100 / raw1000,
                    "server_peak_rss_mb": peak,
                    "track_requests_per_s": track["rps"],
                    "track_p99_ms": track["p99"],
                    "track_non2xx": track["non2xx"] + track["errors"],
                    "bare_requests_per_s": bare_run["rps"],
                    "track_vs_bare": track["rps"] / bare_run["rps"],
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        bare.terminate()
        bare.wait(timeout=20)
    results["rounds"] = rounds

    # Half the median track load: 8 connections, each pausing between requests; the pause is
    # calibrated in short runs until the achieved rate is within 10 % of the target.
    target = median(r["track_requests_per_s"] for r in rounds) / 2
    with hub_server(workdir, "half.db", with_processor=args.with_processor) as hub:
        delay = max(0.0, 8 * 1000 / target - 2.0)
        for _ in range(5):
            probe = run_wrk(
                f"{hub.url}/v1/track", track_body, connections=8, seconds=3, delay_ms=delay
            )
            if abs(probe["rps"] - target) <= 0.1 * target:
                break
            cycle_ms = 8 * 1000 / probe["rps"]  # per connection: latency + pause
            delay = max(0.0, 8 * 1000 / target - (cycle_ms - delay))
        half = run_wrk(
            f"{hub.url}/v1/track",
            track_body,
            connections=8,
            seconds=args.seconds,
            delay_ms=delay,
        )
    results["track_half_load"] = {
        "target_rps": target,
        "achieved_rps": half["rps"],
        "p50_ms": half["p50"],
        "p99_ms": half["p99"],
        "non2xx": half["non2xx"],
    }

    # --- Store: raw executemany and our bulk append, same rows, same table, alternated
    rows = prepared_rows(args.rows, 1, prefix="a")
    sqlite_rounds = []
    for number in range(args.rounds):
        raw = sqlite_raw_executemany(fresh_sqlite_file(workdir, f"raw{number}.db"), rows, 1000)
        _, eng_store = fresh_sqlite(workdir, f"store{number}.db")
        ours = store_append(eng_store, rows, 1000)
        eng_store.dispose()
        sqlite_rounds.append({"raw_executemany_1000": raw, "store_append_1000": ours})
    results["sqlite_store_rounds"] = sqlite_rounds

    if args.postgres_url:
        schema = "bench_" + secrets.token_hex(4)
        admin = sa.create_engine(args.postgres_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            pg_url = sa.make_url(args.postgres_url).update_query_dict(
                {"options": f"-csearch_path={schema}"}
            )
            pg = store.create_store_engine(pg_url.render_as_string(hide_password=False))
            store.upgrade(pg)
            pg_rounds = []
            for _ in range(args.rounds):
                with pg.begin() as conn:
                    conn.execute(sa.text("TRUNCATE events"))
                copy_rate = postgres_raw_copy(pg, rows, 1000)
                with pg.begin() as conn:
                    conn.execute(sa.text("TRUNCATE events"))
                ours_pg = store_append(pg, rows, 1000)
                pg_rounds.append({"raw_copy_1000": copy_rate, "store_append_1000": ours_pg})
            results["postgres_store_rounds"] = pg_rounds
            pg.dispose()
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    results["ratios"] = {
        "batch_vs_raw_executemany_100_same_rows_median": median(
            r["batch_vs_raw_100"] for r in rounds
        ),
        "batch_vs_raw_executemany_1000_same_rows_median": median(
            r["batch_vs_raw_1000"] for r in rounds
        ),
        "batch_events_per_s_median": median(r["batch_events_per_s"] for r in rounds),
        "track_vs_bare_endpoint_median": median(r["track_vs_bare"] for r in rounds),
        "server_peak_rss_mb_max": max(r["server_peak_rss_mb"] for r in rounds),
        "sqlite_store_append_vs_raw_executemany_median": median(
            r["store_append_1000"] / r["raw_executemany_1000"] for r in sqlite_rounds
        ),
    }
    if "postgres_store_rounds" in results:
        results["ratios"]["postgres_store_append_vs_raw_copy_median"] = median(
            r["store_append_1000"] / r["raw_copy_1000"] for r in results["postgres_store_rounds"]
        )
    out_dir = ROOT / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "ingest.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

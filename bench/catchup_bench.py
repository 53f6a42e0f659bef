"""Backlog drain benchmark (reliability plan L7/R5): the tracking API's acks while the
processor catches up, against its acks once it has caught up, in the same run.

A store (SQLite; `--postgres-url` for PostgreSQL) gets a backlog of the demo shop's events
(appended directly, as if the processor had been stopped while the API accepted them). Then
`closedloop serve` starts (the processor embedded, or with `--worker` in a `closedloop
worker` process of its own) and a client sends `/v1/batch` requests of 10 events at `--rate`
events/s for `--seconds`. Each request's time to its 200 is recorded, with the processor's
lag from `/metrics` every 250 ms. Printed: the drain time and rate against the ingest rate
(R5: at least 3 times), and the acks' p50/p95/p99/max during the drain and after it.

Run: `.venv/bin/python bench/catchup_bench.py [--customers 20000] [--worker]
[--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]`
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from closedloop import ingest
from closedloop.demo import generate_shop
from process_bench import NOW, append_all, drop, free_port, fresh, rows_of, views

_LAG = "closedloop_processor_lag_events "


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


def _line(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no requests"
    return (
        f"{label}: {len(values):,} requests, p50 {_pct(values, 0.5):.0f} ms, "
        f"p95 {_pct(values, 0.95):.0f} ms, p99 {_pct(values, 0.99):.0f} ms, "
        f"max {max(values) * 1000:.0f} ms"
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    url, engine, schema = fresh(args.postgres_url, workdir, "catchup")
    made = ingest.add_source(engine, "bench", kind="web")
    messages = list(generate_shop(customers=args.customers, days=90, now=NOW))
    append_all(engine, rows_of(messages, made.source.id))
    if args.postgres_url:
        with engine.begin() as conn:  # (what autovacuum's analyze does after a bulk load)
            conn.exec_driver_sql("ANALYZE events")
    engine.dispose()
    token = "bench-admin-" + "t" * 20
    env = {
        **os.environ,
        "CLOSEDLOOP_DATABASE_URL": url,
        "CLOSEDLOOP_ADMIN_TOKEN": token,
        "CLOSEDLOOP_SECRET_KEY": "bench-secret-" + "s" * 20,
        "CLOSEDLOOP_LOG_LEVEL": "warning",
    }
    if args.worker:
        env["CLOSEDLOOP_PROCESSOR__EMBEDDED"] = "false"
    port = free_port()
    command = [sys.executable, "-m", "closedloop"]
    started_at = time.monotonic()
    processes = [
        subprocess.Popen(
            [*command, "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    ]
    if args.worker:
        processes.append(
            subprocess.Popen([*command, "worker"], cwd=workdir, env=env, stdout=subprocess.DEVNULL)
        )
    base = f"http://127.0.0.1:{port}"
    try:
        while time.monotonic() - started_at < 30:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        key = base64.b64encode(f"{made.write_key}:".encode()).decode()
        auth = {"Authorization": f"Basic {key}"}
        lags: list[tuple[float, float]] = []
        stop = threading.Event()

        def watch_lag() -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                while not stop.is_set():
                    for line in client.get("/metrics").text.splitlines():
                        if line.startswith(_LAG):
                            lags.append((time.monotonic(), float(line.split()[1])))
                    time.sleep(0.25)

        watcher = threading.Thread(target=watch_lag)
        watcher.start()
        acks: list[tuple[float, float]] = []
        sent, per_request = 0, 10
        began = time.monotonic()
        with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
            while time.monotonic() - began < args.seconds:
                batch = views(sent, per_request, "catchup")
                at = time.monotonic()
                answer = client.post("/v1/batch", json={"batch": batch})
                acks.append((at, time.monotonic() - at))
                assert answer.status_code == 200, answer.text
                sent += per_request
                pause = began + sent / args.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        stop.set()
        watcher.join()
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        drop(args.postgres_url, schema)
    # drained: the first lag reading under one request's worth after the start
    drained = next((t for t, lag in lags if t > began and lag < per_request * 10), None)
    during = [seconds for at, seconds in acks if drained is None or at < drained]
    after = [seconds for at, seconds in acks if drained is not None and at >= drained]
    mode = "a `closedloop worker` process" if args.worker else "embedded in `closedloop serve`"
    backend = "PostgreSQL" if args.postgres_url else "SQLite"
    print(
        f"{backend}, backlog {len(messages):,} events; processor {mode}; "
        f"ingest {args.rate:,} events/s"
    )
    if drained is None:
        print(f"not drained within {args.seconds} s")
    else:
        took = drained - began
        received = sum(1 for at, _ in acks if at < drained) * per_request
        rate = (len(messages) + received) / took
        print(
            f"drained in {took:.1f} s: {len(messages):,} + {received:,} events received "
            f"meanwhile, {rate:,.0f} events/s ({rate / args.rate:.1f} x the ingest rate)"
        )
    print(_line("acks while the processor catches up", during))
    print(_line("acks once it has caught up (baseline)", after))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=20_000, help="demo shop size")
    parser.add_argument("--rate", type=int, default=1000, help="events/s sent")
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--worker", action="store_true", help="a separate worker process")
    parser.add_argument("--postgres-url", default=None, help="on PostgreSQL (a schema of its own)")
    args = parser.parse_args()
    print(
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    with tempfile.TemporaryDirectory(prefix="closedloop-catchup-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()

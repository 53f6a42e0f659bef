"""Processor benchmarks, each against a baseline measured in the same run.

1. Processing the demo shop's events (identity resolution, trait merge, computed traits,
   master data) vs a plain append of the same events into the same log, same batch size,
   on SQLite and PostgreSQL: events/s and the ratio (target >= 0.5).
4. Segments: a full refresh of every saved segment vs an incremental one after 10,000 new
   events (target <= 5 %).
2. Profile updates/s on SQLite with 1,000,000 profiles (target >= 10,000): identify events
   with changed traits for existing customers, vs the append of those events.
   The seeded store is processed in turns by the server's engine (WAL checkpointed by a
   thread of its own) and by one whose commits checkpoint (`--million-rounds` each), drained
   as the server drains (on SQLite the processor's pipeline, ADR 0017).
3. Ack-to-profile-visible latency at 1,000 events/s through `closedloop serve` (embedded
   processor): p50/p95/p99 (target p95 <= 1 s); and ack to segment membership changed
   (stored members of a saved segment, target p95 <= 5 s).
5. Segment conditions that read the event log (`--only log-conditions`), as the hub compiles
   them, vs hand-written SQL attributing events by their ids alone, in turns.

Run: `.venv/bin/python bench/process_bench.py` (`--postgres-url` for PostgreSQL,
`--profiles` for the size of case 2).
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import sqlalchemy as sa

from closedloop import ingest, profiles, store
from closedloop.config import IngestSettings, Settings
from closedloop.demo import generate_shop
from closedloop.identity import normalise
from closedloop.identity._tables import identities
from closedloop.ingest.log import append
from closedloop.mood.index import MoodBasis, index_numbers
from closedloop.profiles import processor
from closedloop.profiles._tables import profiles as profiles_table
from closedloop.profiles.processor import profile_id_for

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
LIMITS = IngestSettings()
BATCH = Settings().processor.batch_events  # the processor's batch; appends use the same


def settings(url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        secret_key="bench-secret-" + "s" * 20,  # type: ignore[arg-type]
    )


def rows_of(messages: list[dict[str, Any]], source_id: int) -> list[tuple[Any, ...]]:
    out = []
    for message in messages:
        row = ingest.normalise_message(
            dict(message), call_type=None, limits=LIMITS, received_at=NOW, sent_at=None
        )
        out.append(row.as_tuple(source_id))
    return out


def fresh(url_base: str | None, workdir: Path, name: str) -> tuple[str, sa.Engine, str | None]:
    if url_base is None:
        path = workdir / f"{name}.db"
        url = f"sqlite:///{path}"
        engine = store.create_store_engine(url, sqlite_synchronous="FULL")
        store.upgrade(engine)
        return url, engine, None
    schema = "bench_" + secrets.token_hex(4)
    admin = sa.create_engine(url_base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    url = sa.make_url(url_base).update_query_dict({"options": f"-csearch_path={schema}"})
    text = url.render_as_string(hide_password=False)
    engine = store.create_store_engine(text)
    store.upgrade(engine)
    return text, engine, schema


def drop(url_base: str | None, schema: str | None) -> None:
    if url_base and schema:
        admin = sa.create_engine(url_base)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def append_all(engine: sa.Engine, rows: list[tuple[Any, ...]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        with engine.begin() as conn:
            append(conn, rows[start : start + BATCH])
    return len(rows) / (time.perf_counter() - started)


def case_ratio(url_base: str | None, workdir: Path, customers: int, rounds: int) -> None:
    label = "PostgreSQL" if url_base else "SQLite"
    messages = list(generate_shop(customers=customers, days=90, now=NOW))
    ratios, rates, bases = [], [], []
    for n in range(rounds):
        url, engine, schema = fresh(url_base, workdir, f"ratio-{n}")
        source_id = ingest.add_source(engine, "bench", kind="web").source.id
        rows = rows_of(messages, source_id)
        base = append_all(engine, rows)
        if url_base:
            # What autovacuum's analyze does soon after a bulk load; without statistics the
            # planner sorts the whole backlog instead of walking the (txid, id) index.
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE events")
        normalise.forget_seen()  # each round meets its addresses first, as a new process would
        started = time.perf_counter()
        done = profiles.process_available(engine, settings(url), limit=BATCH)
        rate = done / (time.perf_counter() - started)
        assert done == len(rows), (done, len(rows))
        engine.dispose()
        drop(url_base, schema)
        ratios.append(rate / base)
        rates.append(rate)
        bases.append(base)
        print(
            f"  {label} round {n + 1}: process {rate:,.0f}/s, append {base:,.0f}/s, "
            f"ratio {rate / base:.2f}"
        )
    print(
        f"{label}: {len(messages):,} events; processing {median(rates):,.0f} events/s vs plain "
        f"append {median(bases):,.0f} events/s: ratio {median(ratios):.2f} (median of {rounds})"
    )


def seed_profiles(engine: sa.Engine, count: int) -> None:
    """`count` customers with user id, anonymous id, e-mail and traits, written directly, as
    the processor leaves them: one in three with a mood signal (and its index numbers), one
    in four with an NPS answer."""
    now = NOW - timedelta(days=30)
    us = int((now - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
    basis = MoodBasis.starting(NOW, 90)
    chunk = 20_000
    for start in range(0, count, chunk):
        prows, irows = [], []
        for i in range(start, min(count, start + chunk)):
            pid = profile_id_for(10_000_000_000 + i)
            email = f"customer{i}@example.com"
            traits = {
                "email": [email, us, "seed"],
                "firstName": ["Erika", us, "seed"],
                "lastName": [f"Muster{i}", us, "seed"],
                "gender": ["w", us, "seed"],
                "address.postalCode": ["01067", us, "seed"],
                "address.city": ["Dresden", us, "seed"],
            }
            computed = {
                "first_seen": us,
                "last_seen": us,
                "events": 1,
                "by_type": {"identify": 1},
                "channels": ["web"],
                "orders": 0,
                "revenue": 0.0,
                "interests": {},
            }
            derived: dict[str, Any] = {}
            if i % 3 == 0:
                signals = [[us, 0.2 if i % 2 else -0.3, "nps", 10_000_000_000 + i, 0]]
                derived = {"mood": signals, **index_numbers(signals, basis)}
            if i % 4 == 0:
                computed["nps"] = [i % 11, us, 10_000_000_000 + i]
                derived["nps"] = [i % 11, us]  # (migration 0019)
            prows.append(
                {
                    "id": pid,
                    "merged_into": None,
                    "customer_key": None,
                    "user_ids": [f"u{i}"],
                    "anonymous_ids": 1,
                    "traits": traits,
                    "computed": computed,
                    "consent": {},
                    "derived": derived,
                    "masterdata": {
                        "email": email,
                        "phone": None,
                        "first_name": "Erika",
                        "last_name": f"Muster{i}",
                        "gender": "female",
                        "salutation_de": f"Sehr geehrte Frau Muster{i}",
                        "salutation_en": f"Dear Ms Muster{i}",
                        "street": None,
                        "city": "Dresden",
                        "country": None,
                        "postal_code": "01067",
                        "birthday": None,
                        "created_at": None,
                        "company": None,
                    },
                    "quality": [],
                    "created_at": now,
                    "updated_at": now,
                    "created_event_id": 10_000_000_000 + i,
                }
            )
            for key in (f"u:u{i}", f"a:a{i}", f"e:{email}"):
                irows.append({"key": key, "profile_id": pid, "first_seen_at": now, "event_id": 0})
        with engine.begin() as conn:
            conn.execute(profiles_table.insert(), prows)
            conn.execute(identities.insert(), irows)


def case_million(
    workdir: Path, count: int, events: int, rounds: int, keep: Path | None = None
) -> None:
    kept = keep / f"million-{count}-{events}.db" if keep else None
    url, engine, _schema = fresh(None, workdir, "million")
    path = Path(sa.make_url(url).database or "")
    seeded = path.with_name("million-seeded.db")
    if kept is not None and kept.exists():
        engine.dispose()
        shutil.copyfile(kept, seeded)
        print(f"  seeded store reused from {kept}")
        process_million(url, path, seeded, count, events, rounds, base=None)
        return
    started = time.perf_counter()
    seed_profiles(engine, count)
    print(f"  seeded {count:,} profiles in {time.perf_counter() - started:.0f} s")
    source_id = ingest.add_source(engine, "bench", kind="web").source.id
    rng = random.Random(5)
    messages = []
    for n in range(events):
        i = rng.randrange(count)
        messages.append(
            {
                "type": "identify",
                "userId": f"u{i}",
                "messageId": f"m{n}",
                "timestamp": (NOW + timedelta(seconds=n)).isoformat(),
                "traits": {"city": rng.choice(["Dresden", "Leipzig"]), "plan": f"p{n % 7}"},
            }
        )
    rows = rows_of(messages, source_id)
    base = append_all(engine, rows)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    shutil.copyfile(path, seeded)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
    process_million(url, path, seeded, count, events, rounds, base=base)


def process_million(
    url: str, path: Path, seeded: Path, count: int, events: int, rounds: int, base: float | None
) -> None:
    config = settings(url)
    # The same seeded store processed by the server's engine (the WAL checkpointed by a
    # thread of its own) and by one whose commits checkpoint (SQLite's default), in turns.
    figures: dict[str, list[float]] = {"background": [], "inline": []}
    for _round in range(rounds):
        for mode in figures:
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(seeded, path)
            engine = store.create_store_engine(
                url, sqlite_synchronous="FULL", background_checkpoints=mode == "background"
            )
            store.upgrade(engine)  # a kept store from before a migration (not timed)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            started = time.perf_counter()
            # One processor for the run, drained as the server's loop drains (on SQLite a
            # pipeline: a batch is written while the next one is applied).
            pipeline = processor._Pipeline(engine, config, processor._Processor(config), None)
            pipeline.drain(BATCH, None)
            updated = pipeline.changed
            seconds = time.perf_counter() - started
            engine.dispose()
            figures[mode].append(updated / seconds)
            print(
                f"SQLite, {count:,} profiles, checkpoints {mode}: {events:,} identify events "
                f"updated {updated:,} profiles in {seconds:.1f} s: {updated / seconds:,.0f} "
                f"profile updates/s ({events / seconds:,.0f} events/s; "
                + (
                    f"plain append of the same events {base:,.0f}/s)"
                    if base
                    else "the kept store: its append was measured when it was seeded)"
                )
            )
    for mode, rates in figures.items():
        print(f"  checkpoints {mode}: median {median(rates):,.0f} profile updates/s")


def views(first: int, count: int, prefix: str) -> list[dict[str, Any]]:
    """`count` product views of new visitors, numbered from `first`."""
    return [
        {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": f"visitor-{first + k}",
            "messageId": f"{prefix}-{first + k}",
            "properties": {"category": "Laufschuhe"},
        }
        for k in range(count)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def case_latency(workdir: Path, seconds: int, rate: int) -> None:
    url, engine, _ = fresh(None, workdir, "latency")
    key = ingest.add_source(engine, "bench", kind="web").write_key
    engine.dispose()
    token = "bench-admin-" + "t" * 20
    port = free_port()
    env = {
        **os.environ,
        "CLOSEDLOOP_DATABASE_URL": url,
        "CLOSEDLOOP_ADMIN_TOKEN": token,
        "CLOSEDLOOP_SECRET_KEY": "bench-secret-" + "s" * 20,
        "CLOSEDLOOP_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        admin = {"Authorization": f"Bearer {token}"}
        made = httpx.post(
            f"{base}/v1/segments",
            json={"name": "viewers", "condition": 'did "Product Viewed"'},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        member_latencies: list[float] = []
        member_probes: list[tuple[int, float]] = []
        latencies: list[float] = []
        lock = threading.Lock()
        probes: list[tuple[str, float]] = []
        stop = threading.Event()

        def poller() -> None:
            with httpx.Client(base_url=base, headers=admin, timeout=10) as client:
                while not stop.is_set() or probes:
                    with lock:
                        pending = list(probes)
                    if not pending:
                        time.sleep(0.005)
                        continue
                    anon, acked = pending[0]
                    found = client.get("/v1/profiles", params={"anonymous_id": anon}).json()
                    if found["items"]:
                        with lock:
                            probes.pop(0)
                        latencies.append(time.monotonic() - acked)
                    else:
                        time.sleep(0.005)

        def member_poller() -> None:
            with httpx.Client(base_url=base, headers=admin, timeout=10) as client:
                while not stop.is_set() or member_probes:
                    size = client.get("/v1/segments/viewers").json()["size"]
                    now = time.monotonic()
                    with lock:
                        while member_probes and member_probes[0][0] <= size:
                            member_latencies.append(now - member_probes.pop(0)[1])
                    time.sleep(0.02)

        thread = threading.Thread(target=poller)
        thread.start()
        members_thread = threading.Thread(target=member_poller)
        members_thread.start()
        per_request = 10
        interval = per_request / rate
        sent = 0
        started = time.monotonic()
        with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
            while time.monotonic() - started < seconds:
                batch = views(sent, per_request, "lat")
                answer = client.post("/v1/batch", json={"batch": batch})
                acked = time.monotonic()
                assert answer.status_code == 200, answer.text
                if (sent // per_request) % 10 == 0:  # probe one event a 100
                    with lock:
                        probes.append((batch[-1]["anonymousId"], acked))
                        member_probes.append((sent + per_request, acked))
                sent += per_request
                pause = started + (sent / rate) - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        stop.set()
        thread.join(60)
        members_thread.join(120)
        elapsed = time.monotonic() - started
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

        print(
            f"ack to profile visible at {sent / elapsed:,.0f} events/s for {elapsed:.0f} s "
            f"({len(latencies)} probes): p50 {pct(0.5):.0f} ms, p95 {pct(0.95):.0f} ms, "
            f"p99 {pct(0.99):.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
        member_latencies.sort()
        if member_latencies:

            def mpct(p: float) -> float:
                return (
                    member_latencies[min(len(member_latencies) - 1, int(p * len(member_latencies)))]
                    * 1000
                )

            print(
                f'ack to segment membership (`did "Product Viewed"`, stored members, server\'s '
                f"refresher) ({len(member_latencies)} probes): p50 {mpct(0.5):.0f} ms, "
                f"p95 {mpct(0.95):.0f} ms, p99 {mpct(0.99):.0f} ms, "
                f"max {member_latencies[-1] * 1000:.0f} ms"
            )
        del interval
    finally:
        proc.terminate()
        proc.wait(30)


def processed_demo(
    url_base: str | None, workdir: Path, name: str, customers: int
) -> tuple[sa.Engine, str | None, Settings, int, list[tuple[Any, ...]]]:
    """A fresh store with the demo shop's events appended (on PostgreSQL then analysed) and
    processed: its engine, schema, settings, source id and the appended rows."""
    url, engine, schema = fresh(url_base, workdir, name)
    config = settings(url)
    source_id = ingest.add_source(engine, "bench", kind="web").source.id
    rows = rows_of(list(generate_shop(customers=customers, days=90, now=NOW)), source_id)
    append_all(engine, rows)
    if url_base:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    profiles.process_available(engine, config)
    return engine, schema, config, source_id, rows


def case_segments(url_base: str | None, workdir: Path, customers: int) -> None:
    """Full evaluation of every saved segment vs re-evaluation after 10,000 new events."""
    from closedloop import segments

    label = "PostgreSQL" if url_base else "SQLite"
    engine, schema, config, source_id, rows = processed_demo(
        url_base, workdir, "segments", customers
    )
    segments.save_segment(
        engine,
        config,
        "runners",
        segments.parse_condition('did "Product Viewed" with category = "Laufschuhe"'),
        create=True,
    )
    started = time.perf_counter()
    full = segments.refresh(engine, config)
    full_s = time.perf_counter() - started
    more = list(generate_shop(customers=600, days=5, seed=99, now=NOW))[:10_000]
    append_all(engine, rows_of(more, source_id))
    profiles.process_available(engine, config)
    started = time.perf_counter()
    partial = segments.refresh(engine, config, incremental=True)
    partial_s = time.perf_counter() - started
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM profiles")).scalar_one()
    engine.dispose()
    drop(url_base, schema)
    print(
        f"{label} segments ({full.segments} saved, {count:,} profiles, {len(rows):,} events): "
        f"full refresh {full_s * 1000:,.0f} ms ({full.entered:,} entered); after "
        f"{len(more):,} new events an incremental refresh {partial_s * 1000:,.0f} ms "
        f"({partial.entered} entered, {partial.exited} exited): {partial_s / full_s:.1%} of full"
    )


# Conditions that read the event log, and the same selections hand-written as plain SQL that
# attributes each event by its user id, else its anonymous id, alone (no `event_attributions`).
_VISITED = """
SELECT count(*) FROM profiles WHERE merged_into IS NULL AND id IN (
  SELECT i.profile_id FROM events JOIN identities i ON i.key =
    CASE WHEN user_id IS NOT NULL THEN 'u:' || user_id ELSE 'a:' || anonymous_id END
  WHERE type IN ('page', 'screen') AND timestamp >= :since
    AND lower({path}) LIKE '/account/kuendigung%')
"""
_DID = """
SELECT count(*) FROM profiles WHERE merged_into IS NULL AND id IN (
  SELECT i.profile_id FROM events JOIN identities i ON i.key =
    CASE WHEN user_id IS NOT NULL THEN 'u:' || user_id ELSE 'a:' || anonymous_id END
  WHERE type = 'track' AND event = 'Product Viewed' AND timestamp >= :since
  GROUP BY i.profile_id HAVING count(*) >= 3)
"""
_LOG_CONDITIONS = {
    'visited page "/account/kuendigung*" within 30 days': {
        "sqlite": _VISITED.replace("{path}", "json_extract(payload, '$.properties.path')"),
        "postgresql": _VISITED.replace("{path}", "payload->'properties'->>'path'"),
    },
    'did "Product Viewed" at least 3 times within 30 days': {
        "sqlite": _DID,
        "postgresql": _DID,
    },
}


def case_log_conditions(url_base: str | None, workdir: Path, customers: int, rounds: int) -> None:
    """Segment conditions the event tallies do not answer, as the hub compiles them (events
    attributed as the processor applied them), against the hand-written attribution by ids
    alone, in turns on the same store."""
    from closedloop.segments import parse_condition
    from closedloop.segments.compile import compile_condition

    label = "PostgreSQL" if url_base else "SQLite"
    engine, schema, config, _source, rows = processed_demo(
        url_base, workdir, "log-conditions", customers
    )
    if url_base:  # the profiles and identities too
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    since = NOW - timedelta(days=30)
    for text, hand in _LOG_CONDITIONS.items():
        hub_ms, hand_ms = [], []
        with engine.connect() as conn:
            where = compile_condition(
                parse_condition(text), conn.dialect.name, now=NOW, mood=config.mood,
                segment=lambda _name: {}, tallies=False,
            )  # fmt: skip
            hub_query = (
                sa.select(sa.func.count())
                .select_from(profiles_table)
                .where(profiles_table.c.merged_into.is_(None), where)
            )
            hand_query = sa.text(hand[conn.dialect.name]).bindparams(
                sa.bindparam("since", since, type_=store.UTCDateTime())
            )
            for _ in range(rounds):
                started = time.perf_counter()
                found = conn.execute(hub_query).scalar_one()
                hub_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                expected = conn.execute(hand_query).scalar_one()
                hand_ms.append((time.perf_counter() - started) * 1000)
        assert found == expected, (text, found, expected)  # the demo has no attributed event
        print(
            f"{label} ({len(rows):,} events) `{text}`: {found:,} members; hub {median(hub_ms):,.0f}"
            f" ms, by hand {median(hand_ms):,.0f} ms (medians of {rounds}): "
            f"{median(hub_ms) / median(hand_ms):.2f}x"
        )
    engine.dispose()
    drop(url_base, schema)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres-url", default=os.environ.get("CLOSEDLOOP_TEST_POSTGRES_URL"))
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument(
        "--million-rounds", type=int, default=2, help="processing runs of each checkpoint mode"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep (and reuse) the seeded 1M store here"
    )
    parser.add_argument("--latency-seconds", type=int, default=20)
    parser.add_argument(
        "--only",
        choices=["ratio", "million", "latency", "segments", "log-conditions"],
        default=None,
    )
    parser.add_argument("--segment-customers", type=int, default=10_000)
    args = parser.parse_args()
    print(
        f"{platform.node()} {platform.processor() or platform.machine()} "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC).date()}"
    )
    with tempfile.TemporaryDirectory(prefix="closedloop-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "ratio"):
            case_ratio(None, workdir, args.customers, args.rounds)
            if args.postgres_url:
                case_ratio(args.postgres_url, workdir, args.customers, args.rounds)
        if args.only in (None, "million"):
            case_million(workdir, args.profiles, args.updates, args.million_rounds, args.keep)
        if args.only in (None, "segments"):
            case_segments(None, workdir, args.segment_customers)
            if args.postgres_url:
                case_segments(args.postgres_url, workdir, args.segment_customers)
        if args.only in (None, "log-conditions"):
            case_log_conditions(None, workdir, args.segment_customers * 2, args.rounds)
            if args.postgres_url:
                case_log_conditions(
                    args.postgres_url, workdir, args.segment_customers * 2, args.rounds
                )
        if args.only in (None, "latency"):
            case_latency(workdir, args.latency_seconds, 1000)


if __name__ == "__main__":
    main()

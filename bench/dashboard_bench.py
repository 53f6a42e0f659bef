"""Dashboard benchmark: server time of the overview, the customer lookup (search, profile,
timeline) and the segment editor's live count, with N profiles and N x E events, against
hand-written queries on the same store in the same run.

The store is filled directly (profiles with master data, mood signals and consent; their
identities; E track events each), then each page is requested through the app in process
(FastAPI's test client: routing, session check, queries, rendering; no network) `--repeat`
times; the median and the slowest are reported. The overview reads the mood counts the
segment refresher keeps (its one pass over the profiles is timed as well). Baselines: a
bare `SELECT 1`, the identity look-up by phone alone, and `count(*)` over all profiles.

Run: `.venv/bin/python bench/dashboard_bench.py [--profiles 1000000] [--events 10]
[--postgres-url URL]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi.testclient import TestClient

from closedloop import clock, mood, segments, store
from closedloop.access import users as accounts
from closedloop.config import ProcessorSettings, Settings
from closedloop.identity._tables import identities
from closedloop.ingest import add_source
from closedloop.ingest._tables import events
from closedloop.mood._tables import mood_basis
from closedloop.profiles._tables import event_tallies, processor_cursors, profiles
from closedloop.profiles.processor import profile_id_for
from closedloop.profiles.tallies import facet, newest
from closedloop.segments.compile import compile_condition
from closedloop.store import UTCDateTime, to_epoch_us
from closedloop.web import create_app

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
PASSWORD = "bench password 123"  # noqa: S105 - a throwaway bench user
RULES = ["nps_survey", "article_rated", "newsletter_cancelled", "cancellation_page"]
CITIES = ["Dresden", "Leipzig", "Berlin", "Hamburg", "München", "Köln", "Chemnitz", "Görlitz"]


def _settings(url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        secret_key="bench-secret-" + "s" * 20,  # type: ignore[arg-type]
        processor=ProcessorSettings(embedded=False),
    )


def fill(engine: sa.Engine, count: int, per_profile: int) -> None:
    rng = random.Random(7)
    source = add_source(engine, "bench", kind="web").source.id
    event_id = 0
    started = time.perf_counter()
    # The processor's ids (a hash, spread over the key space as in a real store), inserted in
    # key order so every B-tree is filled densely, as a bulk load would.
    pids = sorted(profile_id_for(n) for n in range(count))
    with engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        ids: list[dict[str, Any]] = []
        evs: list[dict[str, Any]] = []
        tallies: list[dict[str, Any]] = []
        for n in range(count):
            pid = pids[n]
            signals = [
                [
                    to_epoch_us(NOW - timedelta(days=rng.randint(0, 200))),
                    rng.choice([-1.0, -0.5, 0.5, 1.0]),
                    rng.choice(RULES),
                    n,
                    0,
                ]
                for _ in range(rng.randint(0, 3))
            ]
            batch.append(
                {
                    "id": pid,
                    "merged_into": None,
                    "customer_key": f"v1.{n:064x}",
                    "user_ids": [f"cust-{n}"],
                    "anonymous_ids": 0,
                    # the reserved traits a shop sends, stored as the processor does
                    "traits": {
                        name: [value, to_epoch_us(NOW), "bench"]
                        for name, value in (
                            ("email", f"kunde{n}@example.de"),
                            ("firstName", "Erika"),
                            ("lastName", f"Muster{n}"),
                            ("gender", "female"),
                            ("phone", f"0351 12{n:07d}"),
                            ("city", CITIES[n % len(CITIES)]),
                            ("postalCode", "01067"),
                            ("street", f"Hauptstraße {n % 200 + 1}"),
                            ("plan", rng.choice(["basic", "gold"])),
                            ("createdAt", (NOW - timedelta(days=n % 900)).isoformat()),
                        )
                    },
                    "computed": {},
                    "consent": {"surveys": [True, 0, "bench"]},
                    "masterdata": {
                        "email": f"kunde{n}@example.de",
                        "phone": f"+4935112{n:07d}",
                        "first_name": "Erika",
                        "last_name": f"Muster{n}",
                        "city": "Dresden",
                        "postal_code": "01067",
                    },
                    "quality": [],
                    "derived": {"mood": signals},
                    "created_at": NOW,
                    "updated_at": NOW,
                    "created_event_id": 0,
                    "processed_seq": 0,
                }
            )
            ids += [
                {"key": f"u:cust-{n}", "profile_id": pid, "first_seen_at": NOW, "event_id": 0},
                {
                    "key": f"p:+4935112{n:07d}",
                    "profile_id": pid,
                    "first_seen_at": NOW,
                    "event_id": 0,
                },
            ]
            if per_profile:  # what the processor keeps for them (profiles.tallies)
                times = newest(
                    to_epoch_us(NOW - timedelta(minutes=per_profile - k))
                    for k in range(per_profile)
                )
                for kind in ("", facet("category", "Laufschuhe")):
                    tallies.append(
                        {
                            "profile_id": pid,
                            "event": "Product Viewed",
                            "facet": kind,
                            "total": per_profile,
                            "recent": times,
                        }
                    )
            for k in range(per_profile):
                event_id += 1
                at = NOW - timedelta(minutes=per_profile - k)
                evs.append(
                    {
                        "source_id": source,
                        "message_id": f"m{event_id}",
                        "type": "track",
                        "event": "Product Viewed",
                        "user_id": f"cust-{n}",
                        "anonymous_id": None,
                        "timestamp": at,
                        "received_at": at,
                        "payload": {
                            "type": "track",
                            "event": "Product Viewed",
                            "properties": {"category": "Laufschuhe", "price": 99.5},
                        },
                    }
                )
            if len(batch) >= 10_000:
                conn.execute(profiles.insert(), batch)
                conn.execute(identities.insert(), ids)
                conn.execute(event_tallies.insert(), tallies)
                batch, ids, tallies = [], [], []
            if len(evs) >= 50_000:
                conn.execute(events.insert(), evs)
                evs = []
        if batch:
            conn.execute(profiles.insert(), batch)
            conn.execute(identities.insert(), ids)
            if tallies:
                conn.execute(event_tallies.insert(), tallies)
        if evs:
            conn.execute(events.insert(), evs)
        last = conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0
        txid = conn.execute(sa.select(sa.func.max(events.c.txid))).scalar() or 0
        conn.execute(
            processor_cursors.update()
            .where(processor_cursors.c.name == "main")
            .values(event_id=last, txid=txid)
        )
    print(
        f"filled {count:,} profiles, {event_id:,} events in {time.perf_counter() - started:.0f} s"
    )


def _once(action: Callable[[], Any]) -> dict[str, float]:
    started = time.perf_counter()
    action()
    ms = (time.perf_counter() - started) * 1000
    return {"median_ms": ms, "max_ms": ms}


def _time(action: Callable[[], Any], repeat: int) -> dict[str, float]:
    action()  # warm
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return {"median_ms": statistics.median(seconds) * 1000, "max_ms": max(seconds) * 1000}


def _vacuum(engine: sa.Engine) -> None:
    """What autovacuum does after a load or an update of every profile: statistics, and on
    PostgreSQL the visibility map its index-only scans need (autovacuum is off on the bench
    machine's PostgreSQL, so the bench does it)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))


def measure(url: str, count: int, repeat: int) -> dict[str, dict[str, float]]:
    settings = _settings(url)
    engine = store.create_store_engine(url)
    accounts.add_user(engine, "bench", role="admin", password=PASSWORD)
    results: dict[str, dict[str, float]] = {}
    # Once, after the upgrade (and when the half-life changes): every profile's mood index
    # numbers (the fill wrote signals only).
    with store.begin_write(engine) as conn:
        conn.execute(sa.delete(mood_basis))
    results["background: mood index numbers of every profile (once)"] = _once(
        lambda: mood.ensure_basis(engine, settings, clock.now())
    )
    # Once, when the setting names new traits (SQLite): their indexes.
    for index in sorted(segments.trait_index.PREFIX + t for t in settings.segments.indexed_traits):
        with store.begin_write(engine) as conn:
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{index}"')
    results["background: trait indexes created (once)"] = _once(
        lambda: segments.ensure_trait_indexes(engine, settings)
    )
    _vacuum(engine)  # what autovacuum does after such an update
    # what the segment refresher does in the background once per refresh
    results["background: mood counts, one pass"] = _time(
        lambda: segments.record_moods(engine, settings, clock.now()), 1
    )
    with TestClient(create_app(settings, engine=engine)) as client:
        form = client.get("/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token is not None
        client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": token.group(1)})
        target = count // 2
        phone = f"0351 12{target:07d}"
        with engine.connect() as conn:
            found = conn.execute(
                sa.select(identities.c.profile_id).where(identities.c.key == f"u:cust-{target}")
            ).scalar_one()

        def ok(path: str, **params: Any) -> None:
            answer = client.get(path, params=params)
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])

        results["overview page"] = _time(lambda: ok("/"), repeat)
        results["customer lookup: search"] = _time(
            lambda: client.get("/customers", params={"q": phone}, follow_redirects=False),
            repeat,
        )
        results["customer lookup: profile page"] = _time(lambda: ok(f"/customers/{found}"), repeat)
        results["live count: mood is positive"] = _time(
            lambda: ok("/segments/count", condition="mood is positive"), repeat
        )
        results["live count: mood is negative or churn risk"] = _time(
            lambda: ok("/segments/count", condition="mood is negative or churn risk"), repeat
        )
        results["live count: did Product Viewed twice in 365 days"] = _time(
            lambda: ok(
                "/segments/count",
                condition='did "Product Viewed" at least 2 times within 365 days',
            ),
            repeat,
        )
        results["live count: did Product Viewed with category twice in 365 days"] = _time(
            lambda: ok(
                "/segments/count",
                condition='did "Product Viewed" with category = "Laufschuhe" '
                "at least 2 times within 365 days",
            ),
            repeat,
        )
        results["live count: trait city"] = _time(
            lambda: ok("/segments/count", condition='trait city = "Dresden"'), repeat
        )
        runners = (
            'did "Product Viewed" with category = "Laufschuhe" at least 2 times within 365 days'
        )
        for name, condition in (
            ("did with category and mood is positive", f"{runners} and mood is positive"),
            ("did with category and trait city", f'{runners} and trait city = "Dresden"'),
            ("did with category or mood is positive", f"{runners} or mood is positive"),
        ):
            results[f"live count: {name}"] = _time(
                lambda c=condition: ok("/segments/count", condition=c), repeat
            )
        with engine.connect() as conn:
            exact = compile_condition(
                {"mood": "positive"}, conn.dialect.name, now=clock.now(), mood=settings.mood,
                segment=lambda _name: {},
            )  # fmt: skip
            results["baseline: mood is positive, exact sum (no index)"] = _time(
                lambda: conn.execute(
                    sa.select(sa.func.count()).select_from(profiles).where(exact)
                ).scalar(),
                repeat,
            )
            viewed = {"did": {"event": "Product Viewed", "at_least": 2, "within_days": 365}}
            from_log = compile_condition(
                viewed, conn.dialect.name, now=clock.now(), mood=settings.mood,
                segment=lambda _name: {}, tallies=False,
            )  # fmt: skip
            results["baseline: did Product Viewed twice in 365 days, from the log"] = _once(
                lambda: conn.execute(
                    sa.select(sa.func.count())
                    .select_from(profiles)
                    .where(profiles.c.merged_into.is_(None), from_log)
                ).scalar()
            )
            since = clock.now() - timedelta(days=365)
            results["baseline: hand-written GROUP BY user_id over the log"] = _once(
                lambda: conn.execute(
                    sa.text(
                        "SELECT count(*) FROM (SELECT user_id FROM events "
                        "WHERE type = 'track' AND event = 'Product Viewed' AND timestamp >= :t "
                        "GROUP BY user_id HAVING count(*) >= 2) AS viewers"
                    ).bindparams(sa.bindparam("t", since, UTCDateTime())),
                ).scalar()
            )
            results["baseline: SELECT 1"] = _time(
                lambda: conn.execute(sa.text("SELECT 1")).scalar(), repeat
            )
            results["baseline: identity by phone"] = _time(
                lambda: conn.execute(
                    sa.select(identities.c.profile_id).where(
                        identities.c.key == f"p:+4935112{target:07d}"
                    )
                ).scalar(),
                repeat,
            )
            results["baseline: count(*) of profiles"] = _time(
                lambda: conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar(),
                repeat,
            )
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10, help="events per profile")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument(
        "--no-analyze", action="store_true", help="measure right after the load, no statistics"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="PostgreSQL: drop the bench schema first"
    )
    parser.add_argument(
        "--sqlite-file", type=Path, default=None, help="keep the SQLite store here; reuse it"
    )
    args = parser.parse_args()
    print(
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d}"
    )
    with tempfile.TemporaryDirectory() as folder:
        if args.postgres_url:
            admin = sa.create_engine(args.postgres_url)
            with admin.begin() as conn:
                if args.fresh:
                    conn.execute(sa.text("DROP SCHEMA IF EXISTS bench_dashboard CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS bench_dashboard"))
            url = (
                sa.make_url(args.postgres_url)
                .update_query_dict({"options": "-csearch_path=bench_dashboard"})
                .render_as_string(hide_password=False)
            )
        else:
            url = f"sqlite:///{args.sqlite_file or Path(folder) / 'bench.db'}"
        engine = store.create_store_engine(url)
        started = time.perf_counter()
        store.upgrade(engine)  # on a kept store of an older revision: its migrations
        print(f"upgrade: {time.perf_counter() - started:.1f} s")
        with engine.connect() as conn:
            filled = conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar()
        if not filled:
            fill(engine, args.profiles, args.events)
            if not args.no_analyze:
                _vacuum(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM users"))
            conn.execute(sa.text("DELETE FROM mood_sizes"))
        engine.dispose()
        results = measure(url, args.profiles, args.repeat)
    width = max(len(k) for k in results)
    for name, figures in results.items():
        print(
            f"{name:<{width}}  median {figures['median_ms']:9.1f} ms  "
            f"max {figures['max_ms']:9.1f} ms"
        )
    print(orjson.dumps(results).decode())


if __name__ == "__main__":
    main()

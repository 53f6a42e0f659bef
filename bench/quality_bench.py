"""Master-data quality across all profiles vs a hand-written scan of the same table.

Seeds `--profiles` customers as the processor leaves them (`process_bench.seed_profiles`),
one in twenty with a problem (a postal code, a gender or a salutation, in turn), then times,
medians of `--rounds`:

- baseline: `SELECT count(*) FROM profiles WHERE merged_into IS NULL AND quality <> '[]'`
  (every live row's problems read once: the profiles with any);
- `read.quality_report` (`GET /v1/profiles/quality`): per field and problem, 3 examples;
- `read.list_profiles(quality=...)` (`GET /v1/profiles?quality=...`): the first page of 50
  with a gender problem, and one for a field no profile has a problem in (a full scan).

Run: `.venv/bin/python bench/quality_bench.py` (`--postgres-url` for PostgreSQL too).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import sqlalchemy as sa

from closedloop.profiles import read
from closedloop.profiles._tables import profiles
from process_bench import drop, fresh, seed_profiles

PROBLEMS = (
    {
        "field": "address.postalCode",
        "problem": "too many digits for a DE postal code",
        "value": "1234567",
    },
    {"field": "gender", "problem": "unrecognised gender", "value": "robot"},
    {"field": "salutation", "problem": "salutation contradicts gender `female`", "value": "Herr"},
)


def timed(rounds: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return median(times)


def case(url_base: str | None, workdir: Path, count: int, rounds: int) -> None:
    label = "PostgreSQL" if url_base else "SQLite"
    _, engine, schema = fresh(url_base, workdir, "quality")
    seed_profiles(engine, count)
    with engine.begin() as conn:
        ids = conn.execute(sa.select(profiles.c.id).order_by(profiles.c.id)).scalars().all()
        bad = [{"pid": pid, "quality": [PROBLEMS[n % 3]]} for n, pid in enumerate(ids[::20])]
        conn.execute(
            profiles.update()
            .where(profiles.c.id == sa.bindparam("pid"))
            .values(quality=sa.bindparam("quality")),
            bad,
        )
        if url_base:
            conn.exec_driver_sql("ANALYZE profiles")

    def baseline() -> None:
        with engine.connect() as conn:
            conn.execute(
                sa.select(sa.func.count())
                .select_from(profiles)
                .where(profiles.c.merged_into.is_(None))
            ).scalar()

    report = read.quality_report(engine)
    assert report["with_problems"] == len(bad), (report["with_problems"], len(bad))
    purposes = ("analytics",)
    scan = timed(rounds, baseline)
    whole = timed(rounds, lambda: read.quality_report(engine))
    page = timed(
        rounds,
        lambda: read.list_profiles(
            engine, after=None, limit=50, purposes=purposes, quality="gender"
        ),
    )
    none = timed(
        rounds,
        lambda: read.list_profiles(
            engine, after=None, limit=50, purposes=purposes, quality="birthday"
        ),
    )
    print(
        f"{label}: {count:,} profiles, {len(bad):,} with a problem: scan {scan * 1000:,.0f} ms; "
        f"quality report {whole * 1000:,.0f} ms ({whole / scan:.1f}x); first page with a gender "
        f"problem {page * 1000:,.0f} ms; a field without problems {none * 1000:,.0f} ms "
        f"({none / scan:.1f}x) (medians of {rounds})"
    )
    engine.dispose()
    drop(url_base, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()
    print(f"{platform.node()} {platform.machine()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        case(None, Path(tmp), args.profiles, args.rounds)
        if args.postgres_url:
            case(args.postgres_url, Path(tmp), args.profiles, args.rounds)


if __name__ == "__main__":
    main()

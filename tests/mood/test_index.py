"""The mood index (`closedloop.mood.index`): the processor keeps each profile's numbers, a
basis change computes them again, and mood conditions read through the index select exactly
the profiles the exact sum and the reference evaluator select, on both backends."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop import profiles as profiles_domain
from closedloop.config import MoodSettings, Settings
from closedloop.mood.index import (
    CHURN_KEY,
    K_KEY,
    LAST_KEY,
    MoodBasis,
    ensure_basis,
    index_numbers,
    read_basis,
    usable_basis,
)
from closedloop.profiles._tables import processor_cursors, profiles
from closedloop.segments import ProfileFacts, count_moods, evaluate
from closedloop.segments.compile import compile_condition
from closedloop.store import to_epoch_us
from tests.conftest import make_settings
from tests.helpers import query_plan
from tests.profiles.conftest import Log

DAY = timedelta(days=1)
CONDITIONS: list[dict[str, Any]] = [
    {"mood": "positive"},
    {"mood": "neutral"},
    {"mood": "negative"},
    {"churn_risk": True},
    {"or": [{"mood": "negative"}, {"churn_risk": True}]},
    {"not": {"mood": "positive"}},
]


def _derived(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(profiles.c.id, profiles.c.derived).where(profiles.c.merged_into.is_(None))
        )
        return {r.id: r.derived for r in rows}


def _assert_numbers(derived: dict[str, Any], basis: MoodBasis) -> None:
    expected = index_numbers(derived.get("mood") or [], basis)
    assert derived[K_KEY] == expected[K_KEY]  # the same sum, to the last bit
    assert derived[LAST_KEY] == expected[LAST_KEY]
    assert derived[CHURN_KEY] == expected[CHURN_KEY]


def test_processor_and_recompute_keep_the_numbers(log: Log, engine: Engine) -> None:
    now = clock.now()
    log.send(
        {"type": "track", "userId": "anna", "event": "NPS Answered", "properties": {"score": 10},
         "timestamp": (now - 3 * DAY).isoformat()},
        {"type": "page", "userId": "ben", "properties": {"path": "/account/kuendigung"},
         "timestamp": (now - 1 * DAY).isoformat()},
        {"type": "track", "userId": "ben", "event": "NPS Answered", "properties": {"score": 2},
         "timestamp": (now - 200 * DAY).isoformat()},
        {"type": "track", "userId": "cleo", "event": "Product Viewed",
         "timestamp": now.isoformat()},
    )  # fmt: skip
    log.process()
    with engine.connect() as conn:
        assert read_basis(conn) is None and usable_basis(conn, log.settings.mood, now) is None
    before = _derived(engine)
    assert K_KEY in before[log.profile_of("user_id", "ben") or ""]
    assert K_KEY not in before[log.profile_of("user_id", "cleo") or ""]  # no signal: no numbers

    assert ensure_basis(engine, log.settings, now) is True
    assert ensure_basis(engine, log.settings, now) is False  # once is enough
    with engine.connect() as conn:
        basis = usable_basis(conn, log.settings.mood, now)
    assert basis is not None and basis.half_life_days == 90
    for derived in _derived(engine).values():
        if "mood" in derived:
            _assert_numbers(derived, basis)
    ben = _derived(engine)[log.profile_of("user_id", "ben") or ""]
    assert ben[CHURN_KEY] == ben[LAST_KEY] == to_epoch_us(now - DAY)

    # New signals and a merge follow the stored basis.
    log.send(
        {"type": "track", "userId": "anna", "event": "Newsletter Unsubscribed",
         "timestamp": now.isoformat()},
        {"type": "page", "anonymousId": "dev-1", "properties": {"path": "/account/kuendigung"},
         "timestamp": (now - 2 * DAY).isoformat()},
        {"type": "identify", "anonymousId": "dev-1", "userId": "anna",
         "timestamp": now.isoformat()},
    )  # fmt: skip
    log.process()
    anna = _derived(engine)[log.profile_of("user_id", "anna") or ""]
    assert len(anna["mood"]) == 3 and anna[CHURN_KEY] == to_epoch_us(now - 2 * DAY)
    _assert_numbers(anna, basis)
    # A rebuild gives the very same documents, floating-point sums included.
    before_rebuild = _derived(engine)
    profiles_domain.rebuild(engine, log.settings)
    assert _derived(engine) == before_rebuild


def test_a_new_half_life_or_a_distant_now_computes_again(log: Log, engine: Engine) -> None:
    now = clock.now()
    log.send(
        {"type": "track", "userId": "anna", "event": "NPS Answered", "properties": {"score": 9},
         "timestamp": (now - 30 * DAY).isoformat()},
    )  # fmt: skip
    log.process()
    ensure_basis(engine, log.settings, now)
    shorter = log.settings.model_copy(update={"mood": MoodSettings(half_life_days=30)})
    with engine.connect() as conn:
        assert usable_basis(conn, shorter.mood, now) is None  # numbers of the old half-life
        main_seq = sa.select(processor_cursors.c.seq).where(processor_cursors.c.name == "main")
        seq = conn.execute(main_seq).scalar_one()
    assert ensure_basis(engine, shorter, now) is True
    with engine.connect() as conn:
        basis = usable_basis(conn, shorter.mood, now)
        # the processor's cached states are dropped: they hold numbers of the old basis
        assert conn.execute(main_seq).scalar_one() == seq + 1
    assert basis is not None and basis.half_life_days == 30
    (anna,) = _derived(engine).values()
    _assert_numbers(anna, basis)
    # 90 years on, 2^(90 y / 30 d) nears the end of floating point: the index is not used,
    # then rebased.
    later = now + timedelta(days=365 * 90)
    with engine.connect() as conn:
        assert usable_basis(conn, shorter.mood, later) is None
    assert ensure_basis(engine, shorter, later) is True
    with engine.connect() as conn:
        rebased = usable_basis(conn, shorter.mood, later)
    assert rebased is not None and rebased.anchor_us == to_epoch_us(later) // 86_400_000_000 * (
        86_400_000_000
    )
    (anna,) = _derived(engine).values()
    _assert_numbers(anna, rebased)


def _fill(engine: Engine, rng: random.Random, now: datetime) -> None:
    """Profiles with random signals: past and future times, churn flags, none at all, an
    empty list, and a merged profile (which must never count)."""
    rows: list[dict[str, Any]] = []
    for n in range(240):
        signals = sorted(
            (
                [
                    to_epoch_us(now + timedelta(days=rng.uniform(-400, 5 if n % 10 == 0 else 0))),
                    rng.choice([-1.0, -0.6, -0.35, 0.25, 0.5, 1.0]) * rng.uniform(0.2, 1),
                    "rule",
                    n,
                    1 if rng.random() < 0.15 else 0,
                ]
                for _ in range(rng.randint(0, 4))
            ),
            key=lambda s: s[0],
        )
        derived: dict[str, Any] = {} if n % 17 == 0 else {"mood": signals}
        rows.append(
            {
                "id": f"p{n:04d}",
                "merged_into": "p0001" if n == 5 else None,
                "customer_key": None,
                "user_ids": [],
                "anonymous_ids": 0,
                "traits": {},
                "computed": {},
                "consent": {},
                "masterdata": {},
                "quality": [],
                "derived": derived,
                "created_at": now,
                "updated_at": now,
                "created_event_id": 0,
            }
        )
    # Scores a hair's breadth from each threshold (0.2 and -0.2) at `now`.
    for n, (age_days, value) in enumerate(
        (a, sign * 0.2 * 2 ** (a / 90) * (1 + nudge))
        for a in (0, 45, 90)
        for sign in (1, -1)
        for nudge in (1e-6, -1e-6)
    ):
        at = to_epoch_us(now - timedelta(days=age_days))
        edge = {"mood": [[at, value, "r", n, 0]]}
        rows.append({**rows[1], "id": f"edge{n:02d}", "derived": edge})
    with engine.begin() as conn:
        conn.execute(profiles.insert(), rows)


def _members(engine: Engine, tree: dict[str, Any], settings: Settings, **kw: Any) -> set[str]:
    with engine.connect() as conn:
        where = compile_condition(
            tree, conn.dialect.name, mood=settings.mood, segment=lambda _n: {}, **kw
        )
        query = sa.select(profiles.c.id).where(profiles.c.merged_into.is_(None), where)
        return set(conn.execute(query).scalars())


def test_index_and_exact_sum_select_the_same_profiles(engine: Engine, db_url: str) -> None:
    settings = make_settings(db_url)
    now = clock.now()
    _fill(engine, random.Random(11), now)
    assert ensure_basis(engine, settings, now) is True
    facts = {
        pid: ProfileFacts(traits={}, consent={}, derived=derived)
        for pid, derived in _derived(engine).items()
    }
    with engine.connect() as conn:
        basis = usable_basis(conn, settings.mood, now)
    assert basis is not None
    for days in (0, 3, 40, 300, -2):
        at = now + timedelta(days=days)
        for tree in CONDITIONS:
            fast = _members(engine, tree, settings, now=at, basis=basis)
            exact = _members(engine, tree, settings, now=at)
            reference = {
                pid
                for pid, f in facts.items()
                if evaluate(tree, f, now=at, mood=settings.mood, segment=lambda _n: {})
            }
            assert fast == exact == reference, (days, tree)
        with engine.connect() as conn:
            counts = count_moods(conn, settings, at)
        assert counts == {
            label: len(_members(engine, {"mood": label}, settings, now=at))
            for label in ("positive", "neutral", "negative")
        }
    assert 0 < len(_members(engine, {"mood": "positive"}, settings, now=now)) < len(facts)


def test_mood_conditions_read_the_index(engine: Engine, db_url: str) -> None:
    settings = make_settings(db_url)
    now = clock.now()
    ensure_basis(engine, settings, now)
    with engine.connect() as conn:
        basis = usable_basis(conn, settings.mood, now)
        assert basis is not None
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.exec_driver_sql("SET enable_seqscan = off")
        future = replace(basis, latest_us=to_epoch_us(now) + 1)  # a signal after `now`
        for tree, used, indexes in (
            ({"mood": "positive"}, basis, ["ix_profiles_mood_k"]),
            # with a signal after `now`, SQLite takes a second range (of the newest signal
            # times); PostgreSQL on an empty table, any plan: not checked there
            (
                {"mood": "positive"},
                future,
                [] if pg else ["ix_profiles_mood_k", "ix_profiles_mood_last"],
            ),
            ({"churn_risk": True}, basis, ["ix_profiles_mood_churn"]),
        ):
            where = compile_condition(
                tree, conn.dialect.name, now=now, mood=settings.mood, segment=lambda _n: {},
                basis=used,
            )  # fmt: skip
            where = sa.and_(profiles.c.merged_into.is_(None), where)
            plan = query_plan(conn, sa.select(sa.func.count()).select_from(profiles).where(where))
            assert all(index in plan for index in indexes), plan
            if not pg and used is basis:  # the live-profile check reads the index too
                assert "COVERING INDEX" in plan or "profiles USING INDEX" in plan, plan


def test_counts_of_mood_and_nps_read_their_indexes_alone_on_postgres(
    engine: Engine, db_url: str
) -> None:
    """PostgreSQL takes an index-only scan only for plain columns: the numbers are generated
    columns (migration 0014), so counting `mood is positive`, `churn risk` or `latest nps`
    reads no table row (once vacuumed, as autovacuum does)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads its expression indexes alone already (test above)")
    settings = make_settings(db_url)
    now = clock.now()
    _fill(engine, random.Random(11), now)
    ensure_basis(engine, settings, now)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE profiles")
    with engine.connect() as conn:
        basis = usable_basis(conn, settings.mood, now)
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_bitmapscan = off")
        for tree, index in (
            ({"mood": "positive"}, "ix_profiles_mood_k"),
            ({"churn_risk": True}, "ix_profiles_mood_churn"),
            ({"latest_nps": {"op": ">=", "value": 9, "within_days": 90}}, "ix_profiles_nps"),
        ):
            where = compile_condition(
                tree, "postgresql", now=now, mood=settings.mood, segment=lambda _n: {},
                basis=basis,
            )  # fmt: skip
            where = sa.and_(profiles.c.merged_into.is_(None), where)
            plan = query_plan(conn, sa.select(sa.func.count()).select_from(profiles).where(where))
            assert f"Index Only Scan using {index}" in plan, plan


def test_merged_profiles_are_found_through_their_index(engine: Engine) -> None:
    with engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.exec_driver_sql("SET enable_seqscan = off")
        plan = query_plan(conn, sa.select(profiles.c.id).where(profiles.c.merged_into == "p1"))
    assert "ix_profiles_merged_into" in plan, plan


def _nps_of(engine: Engine) -> dict[str, tuple[Any, Any]]:
    with engine.connect() as conn:
        return {
            r.id: (r.computed.get("nps"), r.derived.get("nps"))
            for r in conn.execute(sa.select(profiles.c.id, profiles.c.computed, profiles.c.derived))
        }


def test_the_latest_nps_answer_is_kept_in_derived_as_in_computed(log: Log, engine: Engine) -> None:
    """`derived.nps` (where SQLite's NPS indexes read it, migration 0019) is the score and time
    of `computed.nps` after answers, a late answer, a merge, a mood recompute and a rebuild;
    a profile without an answer has neither."""
    now = clock.now()

    def nps(user: str, score: Any, days: int, **ids: str) -> dict[str, Any]:
        return {"type": "track", **({"userId": user} if user else {}), **ids,
                "event": "NPS Answered", "properties": {"score": score},
                "timestamp": (now - days * DAY).isoformat()}  # fmt: skip

    log.send(
        nps("anna", 3, 10),
        nps("anna", 9, 2),
        nps("anna", 0, 20),  # late, older: not the latest
        nps("ben", "zehn", 1),  # not a score
        nps("", 10, 1, anonymousId="dev-7"),  # newer than cleo's own answer
        nps("cleo", 5, 4),
    )
    log.process()
    found = _nps_of(engine)
    anna = found[log.profile_of("user_id", "anna") or ""]
    assert anna[0][:2] == anna[1] == [9, to_epoch_us(now - 2 * DAY)]
    assert found[log.profile_of("user_id", "ben") or ""] == (None, None)
    log.send({"type": "identify", "userId": "cleo", "anonymousId": "dev-7"})
    log.process()
    ensure_basis(engine, log.settings, now)
    found = _nps_of(engine)
    cleo = found[log.profile_of("user_id", "cleo") or ""]
    assert cleo[0][:2] == cleo[1] == [10, to_epoch_us(now - DAY)]
    for computed_nps, derived_nps in found.values():
        assert (computed_nps[:2] if computed_nps else None) == derived_nps
    profiles_domain.rebuild(engine, log.settings)
    assert _nps_of(engine) == found

"""Conditions compiled to SQL select the same profiles as the reference evaluator, on both
backends: the examples against profiles built through the tracking API, and random trees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop import clock, ingest
from closedloop.config import Settings
from closedloop.profiles._tables import profiles
from closedloop.segments import evaluate, member_ids, parse_condition, preview
from closedloop.segments._tables import segments as segments_table
from closedloop.segments.compile import compile_condition
from tests.helpers import basic, query_plan
from tests.profiles.conftest import Log
from tests.segments.conftest import all_facts, resolver


def _days_ago(days: float) -> str:
    return (clock.now() - timedelta(days=days)).isoformat()


def _shop(client: TestClient, source: ingest.NewSourceKey, log: Log) -> None:
    """Five customers, sent through `/v1/batch`; ben visited the cancellation page 3 days ago."""
    batch: list[dict[str, Any]] = []

    def add(kind: str, days: float, **fields: Any) -> None:
        batch.append({"type": kind, "timestamp": _days_ago(days), **fields})

    # anna: promoter, runner, gold, consent to surveys, customer for a year
    add(
        "identify",
        400,
        userId="anna",
        traits={
            "plan": "gold",
            "city": "Dresden",
            "createdAt": _days_ago(400),
            "email": "anna@example.com",
            "consent": {"surveys": True},
            "age": 41,
        },
    )
    add("track", 10, userId="anna", event="NPS Answered", properties={"score": 10})
    for days in (5, 50, 500):
        add(
            "track",
            days,
            userId="anna",
            event="Product Viewed",
            properties={"category": "Laufschuhe"},
        )
    # ben: detractor who looked at the cancellation page, anonymous first
    add("page", 3, anonymousId="ben-phone", properties={"path": "/account/Kuendigung/start"})
    add(
        "identify",
        2,
        userId="ben",
        anonymousId="ben-phone",
        traits={"plan": "basic", "city": "Leipzig", "createdAt": _days_ago(20)},
    )
    add("track", 1, userId="ben", event="NPS Answered", properties={"score": 3})
    # cleo: old promoter answer, then a newer neutral one; one Laufschuhe view
    add("identify", 300, userId="cleo", traits={"city": "Berlin", "age": "41"})
    add("track", 300, userId="cleo", event="NPS Answered", properties={"score": 10})
    add("track", 20, userId="cleo", event="NPS Answered", properties={"score": 8})
    add("track", 20, userId="cleo", event="Product Viewed", properties={"category": "Laufschuhe"})
    # dora: visited the cancellation page 70 days ago (negative, no longer a churn risk)
    add("page", 70, userId="dora", properties={"path": "/account/kuendigung"})
    # emil: anonymous only, shared articles
    add("track", 1, anonymousId="emil", event="Article Shared")
    add("track", 2, anonymousId="emil", event="Article Shared")
    answer = client.post("/v1/batch", json={"batch": batch}, headers=basic(source.write_key))
    assert answer.status_code == 200, answer.text
    log.process()


def _members(log: Log, condition: str) -> set[str]:
    tree = parse_condition(condition)
    ids = member_ids(log.engine, log.settings, tree, now=clock.now())
    return {u for pid in ids for u in _user_ids(log, pid)}


def _user_ids(log: Log, pid: str) -> list[str]:
    found = [k for k in ("anna", "ben", "cleo", "dora") if log.profile_of("user_id", k) == pid]
    if log.profile_of("anonymous_id", "emil") == pid:
        found.append("emil")
    return found


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("mood is positive", {"anna", "emil"}),
        ("mood is negative or churn risk", {"ben", "dora"}),
        ("churn risk", {"ben"}),
        ("latest nps >= 9 within 90 days", {"anna"}),
        ("latest nps >= 9", {"anna"}),
        ("latest nps <= 6 within 90 days", {"ben"}),
        ('visited page "/account/kuendigung*" within 30 days', {"ben"}),
        ('visited page "/account/kuendigung*" within 90 days', {"ben", "dora"}),
        (
            'did "Product Viewed" with category = "Laufschuhe" at least 2 times within 365 days',
            {"anna"},
        ),
        ('did "Product Viewed" with category = "Laufschuhe" within 365 days', {"anna", "cleo"}),
        # without property conditions: from the event tallies
        ('did "Product Viewed" at least 2 times within 365 days', {"anna"}),
        ('did "Product Viewed" within 30 days', {"anna", "cleo"}),
        ('did "Product Viewed" at least 3 times', {"anna"}),
        ('did "Product Viewed" at least 4 times', set()),
        ('did "Article Shared" at least 2 times within 3 days', {"emil"}),
        ('did "Article Shared" at least 2 times within 1 days', set()),
        ('did "product viewed"', set()),
        ('trait plan = "gold"', {"anna"}),
        ('trait city in ["Dresden", "Leipzig"]', {"anna", "ben"}),
        ("trait createdAt before 30 days ago", {"anna"}),
        ("trait createdAt after 30 days ago", {"ben"}),
        ("trait plan is present", {"anna", "ben"}),
        ("trait age >= 40", {"anna"}),  # cleo's "41" is text, not a number
        ('trait age = "41"', {"cleo"}),
        ("consent surveys", {"anna"}),
        ("in segment promoters", {"anna"}),
        ("not in segment promoters and trait city is present", {"ben", "cleo"}),
    ],
)
def test_example_conditions_select_the_right_customers(
    client: TestClient,
    source: ingest.NewSourceKey,
    log: Log,
    condition: str,
    expected: set[str],
) -> None:
    _shop(client, source, log)
    assert _members(log, condition) == expected
    # the live count (from the tallies alone where it can) counts the same customers
    assert preview(log.engine, log.settings, condition, now=clock.now()).count == len(expected)
    facts = all_facts(log.engine)
    tree = parse_condition(condition)
    by_evaluator = {
        pid
        for pid, f in facts.items()
        if evaluate(tree, f, now=clock.now(), mood=log.settings.mood, segment=resolver(log.engine))
    }
    assert by_evaluator == member_ids(log.engine, log.settings, tree, now=clock.now())


def test_a_member_leaves_when_the_window_passes(
    client: TestClient, source: ingest.NewSourceKey, log: Log
) -> None:
    _shop(client, source, log)
    tree = parse_condition('visited page "/account/kuendigung*" within 30 days')
    now = clock.now()
    assert len(member_ids(log.engine, log.settings, tree, now=now)) == 1
    assert member_ids(log.engine, log.settings, tree, now=now + timedelta(days=26)) != set()
    assert (
        member_ids(log.engine, log.settings, tree, now=now + timedelta(days=28, hours=1)) == set()
    )


def test_preview_counts_and_samples(
    client: TestClient, source: ingest.NewSourceKey, log: Log, settings: Settings
) -> None:
    _shop(client, source, log)
    found = preview(log.engine, log.settings, {"mood": "positive"}, now=clock.now())
    assert found.count == 2 and len(found.sample) == 2
    assert found.text == "mood is positive"


# -- random trees over a random shop: SQL equals the reference evaluator

NAMES = st.sampled_from(["plan", "city", "age", "vip", "createdAt"])
VALUES = st.one_of(
    st.sampled_from(["gold", "basic", "Dresden", "41", "", "2026-01-01"]),
    st.sampled_from([41, 12.5, 0, 3, 5, 9, 10, "Laufschuhe", "5"]),  # values the shop holds
    st.integers(-5, 60),
    st.floats(-5, 60, allow_nan=False).map(lambda f: round(f, 2)),
    st.booleans(),
)
OPS = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
DAYS = st.integers(1, 400)
LEAVES = st.one_of(
    st.builds(lambda m: {"mood": m}, st.sampled_from(["positive", "neutral", "negative"])),
    st.just({"churn_risk": True}),
    st.builds(lambda c: {"consent": c}, st.sampled_from(["surveys", "crm_sync"])),
    st.builds(
        lambda op, v, d: {
            "latest_nps": {"op": op, "value": v, **({"within_days": d} if d else {})}
        },
        OPS,
        st.integers(0, 10),
        st.none() | DAYS,
    ),
    st.builds(
        lambda p, d: {"visited_page": {"path": p, **({"within_days": d} if d else {})}},
        st.sampled_from(
            ["/account/kuendigung*", "/account/*", "*/start", "/LAUF*", "/a*b*c", "/x"]
        ),
        st.none() | DAYS,
    ),
    st.builds(
        lambda e, w, n, d: {
            "did": {
                "event": e,
                **({"with": w} if w else {}),
                "at_least": n,
                **({"within_days": d} if d else {}),
            }
        },
        st.sampled_from(["Product Viewed", "Article Shared", "NPS Answered"]),
        st.none() | st.dictionaries(st.sampled_from(["category", "score"]), VALUES, max_size=1),
        st.integers(1, 12),  # above RECENT (10) from the log
        st.none() | DAYS,
    ),
    st.builds(
        lambda n, op, v: {"trait": {"name": n, "op": op, "value": v}},
        NAMES,
        OPS,
        VALUES.filter(lambda v: not isinstance(v, bool)),
    ),
    st.builds(lambda n, v: {"trait": {"name": n, "op": "=", "value": v}}, NAMES, st.booleans()),
    st.builds(
        lambda n, vs: {"trait": {"name": n, "op": "in", "value": vs}},
        NAMES,
        st.lists(VALUES, min_size=1, max_size=3),
    ),
    st.builds(
        lambda n, s: {"trait": {"name": n, "op": s}}, NAMES, st.sampled_from(["present", "absent"])
    ),
    st.builds(
        lambda n, r, d: {"trait": {"name": n, "op": r, "days_ago": d}},
        NAMES,
        st.sampled_from(["before", "after"]),
        DAYS,
    ),
    st.builds(
        lambda s: {"segment": s},
        st.sampled_from(["promoters", "detractors", "positive", "churn-risk"]),
    ),
)
TREES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.builds(lambda cs: {"and": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda cs: {"or": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=8,
)


def _random_shop(log: Log, seed: int) -> None:
    import random

    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    for i in range(25):
        uid, anon = f"u{i}", f"a{i}"
        traits: dict[str, Any] = {}
        for name in ("plan", "city", "age", "vip", "createdAt"):
            if rng.random() < 0.6:
                traits[name] = rng.choice(
                    [
                        "gold",
                        "basic",
                        "Dresden",
                        "41",
                        41,
                        12.5,
                        True,
                        False,
                        None,
                        _days_ago(rng.randint(0, 500))[:10],
                        "",
                    ]
                )
        if rng.random() < 0.5:
            traits["consent"] = {"surveys": rng.random() < 0.5, "crm_sync": rng.random() < 0.5}
        messages.append(
            {
                "type": "identify",
                "userId": uid,
                "anonymousId": anon,
                "traits": traits,
                "timestamp": _days_ago(rng.randint(0, 500)),
            }
        )
        for _ in range(rng.randint(0, 6)):
            days = rng.uniform(0, 400)
            who = {"userId": uid} if rng.random() < 0.5 else {"anonymousId": anon}
            kind = rng.choice(["nps", "view", "share", "page", "page2"])
            if kind == "nps":
                score: Any = rng.choice([0, 3, 6, 7, 8, 9, 10, "9", None])
                messages.append(
                    {
                        "type": "track",
                        "event": "NPS Answered",
                        "properties": {"score": score},
                        "timestamp": _days_ago(days),
                        **who,
                    }
                )
            elif kind == "view":
                messages.append(
                    {
                        "type": "track",
                        "event": "Product Viewed",
                        "properties": {
                            "category": rng.choice(
                                ["Laufschuhe", "laufschuhe", "Socken", 5, 5.0, "5", True, [5]]
                            )
                        },
                        "timestamp": _days_ago(days),
                        **who,
                    }
                )
            elif kind == "share":
                messages.append(
                    {
                        "type": "track",
                        "event": "Article Shared",
                        "timestamp": _days_ago(days),
                        **who,
                    }
                )
            else:
                path = rng.choice(
                    [
                        "/account/kuendigung",
                        "/Account/Kuendigung/start",
                        "/laufschuhe",
                        "/account/vertrag",
                        "/abc",
                        7,
                    ]
                )
                messages.append(
                    {
                        "type": "page",
                        "properties": {"path": path},
                        "timestamp": _days_ago(days),
                        **who,
                    }
                )
        if i % 6 == 0:  # more views than the tallies keep times of
            for _ in range(12):
                who = {"userId": uid} if rng.random() < 0.5 else {"anonymousId": anon}
                messages.append(
                    {
                        "type": "track",
                        "event": "Product Viewed",
                        "properties": {"category": "Socken"},
                        "timestamp": _days_ago(rng.uniform(0, 400)),
                        **who,
                    }
                )
    log.send(*messages)
    log.process()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=TREES)
def test_random_conditions_sql_equals_the_reference_evaluator(
    log: Log, tree: dict[str, Any]
) -> None:
    if not log.live_profiles():
        _random_shop(log, seed=11)
    now = clock.now()
    facts = all_facts(log.engine)
    expected = {
        pid
        for pid, f in facts.items()
        if evaluate(tree, f, now=now, mood=log.settings.mood, segment=resolver(log.engine))
    }
    assert member_ids(log.engine, log.settings, tree, now=now) == expected, tree
    assert preview(log.engine, log.settings, tree, now=now).count == len(expected), tree


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize(
    "leaf",
    [
        lambda op: {"latest_nps": {"op": op, "value": 9}},
        lambda op: {"latest_nps": {"op": op, "value": 6, "within_days": 200}},
        lambda op: {"trait": {"name": "age", "op": op, "value": 41}},
        lambda op: {"trait": {"name": "city", "op": op, "value": "Dresden"}},
        lambda op: {"trait": {"name": "createdAt", "op": op, "value": "2025-12-11"}},
    ],
)
def test_every_comparison_at_its_boundary_matches_the_evaluator(
    log: Log, op: str, leaf: Any
) -> None:
    _random_shop(log, seed=11)
    tree = leaf(op)
    now = clock.now()
    facts = all_facts(log.engine)
    expected = {
        pid
        for pid, f in facts.items()
        if evaluate(tree, f, now=now, mood=log.settings.mood, segment=resolver(log.engine))
    }
    assert member_ids(log.engine, log.settings, tree, now=now) == expected
    negated = {"not": tree}
    assert member_ids(log.engine, log.settings, negated, now=now) == set(facts) - expected


@pytest.mark.parametrize("times", [1, 2, 3, 10, 11])
def test_did_at_its_window_boundary_tallies_equal_the_log(log: Log, times: int) -> None:
    """An event exactly `within_days` old counts (`>=`), one microsecond later not; the
    tallies (N up to RECENT) and the log (N above) agree with the evaluator either way."""
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    edge = now - timedelta(days=30)
    log.send(
        *[
            {"type": "track", "userId": "u", "event": "Seen", "timestamp": (edge + timedelta(
                days=k)).isoformat()}
            for k in range(times)
        ]
    )  # fmt: skip
    log.process()
    tree = {"did": {"event": "Seen", "at_least": times, "within_days": 30}}
    for at, members in ((now, 1), (now + timedelta(microseconds=1), 0)):
        expected = _evaluated(log, tree, at, all_facts(log.engine))
        assert len(expected) == members
        assert member_ids(log.engine, log.settings, tree, now=at) == expected
        assert _by_the_log(log, tree, at) == expected


def _by_the_log(log: Log, tree: dict[str, Any], now: datetime) -> set[str]:
    """The profiles the condition selects, compiled without the event tallies."""
    with log.engine.connect() as conn:
        where = compile_condition(
            tree, conn.dialect.name, now=now, mood=log.settings.mood,
            segment=lambda _n: {}, tallies=False,
        )  # fmt: skip
        return set(conn.execute(sa.select(profiles.c.id).where(where)).scalars())


def _evaluated(log: Log, tree: dict[str, Any], now: datetime, facts: dict[str, Any]) -> set[str]:
    """The profiles of `facts` the reference evaluator selects."""
    segment = resolver(log.engine)
    return {
        pid
        for pid, f in facts.items()
        if evaluate(tree, f, now=now, mood=log.settings.mood, segment=segment)
    }


def _more_events(log: Log, seed: int) -> None:
    """A few new events for some of `_random_shop`'s customers and one newcomer."""
    import random

    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    for _ in range(8):
        i = rng.randrange(25)
        who = {"userId": f"u{i}"} if rng.random() < 0.5 else {"anonymousId": f"a{i}"}
        messages.append(
            rng.choice(
                [
                    {"type": "track", "event": "NPS Answered", "properties": {"score": 10}},
                    {"type": "track", "event": "NPS Answered", "properties": {"score": 2}},
                    {"type": "track", "event": "Product Viewed", "properties": {"category": 5}},
                    {"type": "page", "properties": {"path": "/account/kuendigung"}},
                    {"type": "identify", "traits": {"plan": "gold", "consent": {"surveys": True}}},
                ]
            )
            | {"timestamp": _days_ago(rng.uniform(0, 30)), **who}
        )
    messages.append(
        {
            "type": "identify",
            "userId": f"new{seed}",
            "traits": {"plan": "basic"},
            "timestamp": _days_ago(1),
        }
    )
    log.send(*messages)
    log.process()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=TREES, seed=st.integers(0, 10_000))
def test_incremental_refresh_equals_a_full_evaluation(
    log: Log, tree: dict[str, Any], seed: int
) -> None:
    """A refresh of only the profiles written since (by SQL on them, or by the reference
    evaluator where the condition reads the log) leaves the members a full evaluation finds."""
    from closedloop import segments

    if not log.live_profiles():
        _random_shop(log, seed=11)
    name = f"random-{seed}"
    with log.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM segments WHERE name LIKE 'random-%'"))
    segments.save_segment(log.engine, log.settings, name, tree, create=True)
    now = clock.now()
    segments.refresh(log.engine, log.settings, now=now, names=[name])
    _more_events(log, seed)
    segments.refresh(log.engine, log.settings, now=now, names=[name], incremental=True)
    stored = {m["id"] for m in segments.stored_members(log.engine, name, after=None, limit=1000)}
    assert stored == member_ids(log.engine, log.settings, tree, now=now), tree
    recorded = segments.sizes(log.engine, name)
    assert not recorded or recorded[-1]["size"] == len(stored)
    assert segments.get_segment(log.engine, name).size == len(stored)
    with log.engine.connect() as conn:
        kept = conn.execute(
            sa.select(segments_table.c.members).where(segments_table.c.name == name)
        )
        assert kept.scalar_one() == len(stored)


def test_latest_nps_is_the_newest_answer_from_0_to_10(log: Log) -> None:
    """An answer outside 0..10 (or not a number) is no NPS answer: the one before it counts,
    for the SQL (the processor's `computed.nps`) and the reference evaluator alike."""
    log.send(
        {"type": "identify", "userId": "ok", "timestamp": _days_ago(30)},
        {"type": "track", "userId": "ok", "event": "NPS Answered",
         "properties": {"score": 9}, "timestamp": _days_ago(20)},
        {"type": "track", "userId": "ok", "event": "NPS Answered",
         "properties": {"score": 15}, "timestamp": _days_ago(10)},
        {"type": "track", "userId": "ok", "event": "NPS Survey Answered",
         "properties": {"score": "3"}, "timestamp": _days_ago(5)},
        {"type": "track", "userId": "low", "event": "NPS Answered",
         "properties": {"score": -1}, "timestamp": _days_ago(5)},
        {"type": "track", "userId": "half", "event": "NPS Survey Answer Changed",
         "properties": {"score": 8.5}, "timestamp": _days_ago(5)},
    )  # fmt: skip
    log.process()
    now = clock.now()
    facts = all_facts(log.engine)
    ok, half = log.profile_of("user_id", "ok"), log.profile_of("user_id", "half")
    for tree, expected in (
        ({"latest_nps": {"op": ">=", "value": 9}}, {ok}),
        ({"latest_nps": {"op": ">=", "value": 9, "within_days": 15}}, set()),
        ({"latest_nps": {"op": ">=", "value": 9, "within_days": 25}}, {ok}),
        ({"latest_nps": {"op": "<", "value": 9}}, {half}),
        ({"latest_nps": {"op": "!=", "value": 9}}, {half}),
    ):
        assert member_ids(log.engine, log.settings, tree, now=now) == expected, tree
        reference = {
            pid
            for pid, f in facts.items()
            if evaluate(tree, f, now=now, mood=log.settings.mood, segment=resolver(log.engine))
        }
        assert reference == expected, tree


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("within_days", [None, 90])
def test_latest_nps_reads_its_index(log: Log, op: str, within_days: int | None) -> None:
    """Every comparison reads the index, which holds only profiles with an answer (migration
    0018): the planner must see that the comparison is false without one."""
    spec: dict[str, Any] = {"op": op, "value": 9}
    if within_days is not None:
        spec["within_days"] = within_days
    with log.engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.exec_driver_sql("SET enable_seqscan = off")
        where = compile_condition(
            {"latest_nps": spec}, conn.dialect.name, now=clock.now(), mood=log.settings.mood,
            segment=lambda _n: {},
        )  # fmt: skip
        where = sa.and_(profiles.c.merged_into.is_(None), where)
        plan = query_plan(conn, sa.select(sa.func.count()).select_from(profiles).where(where))
        definition = conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_profiles_nps' "
            "AND schemaname = current_schema()"
            if pg
            else "SELECT sql FROM sqlite_master WHERE name = 'ix_profiles_nps'"
        ).scalar_one()
    assert "ix_profiles_nps" in plan, plan
    assert "IS NOT NULL" in definition, definition  # profiles with an answer only


def test_migration_fills_the_latest_nps_from_processed_answers(log: Log) -> None:
    """Migration 0013 gives profiles written before the processor kept `computed.nps` the
    answer it would have kept; answers not yet processed wait for the processor."""
    from alembic import command

    from closedloop import store
    from closedloop.store._migrate import _config

    _random_shop(log, seed=11)
    log.send(
        {
            "type": "track",
            "userId": "u2",
            "event": "NPS Answered",
            "properties": {"score": "neun"},
            "timestamp": _days_ago(0),
        },
    )  # fmt: skip, no answer (and no number to cast)
    log.process()
    with log.engine.connect() as conn:
        kept = {r.id: r.computed.get("nps") for r in conn.execute(sa.select(profiles))}
    assert sum(1 for answer in kept.values() if answer) >= 3
    log.send(
        {
            "type": "track",
            "userId": "u1",
            "event": "NPS Answered",
            "properties": {"score": 0},
            "timestamp": _days_ago(0),
        },
    )  # fmt: skip, not processed
    command.downgrade(_config(log.engine), "0012")
    with log.engine.begin() as conn:
        for pid in kept:
            computed = conn.execute(
                sa.select(profiles.c.computed).where(profiles.c.id == pid)
            ).scalar_one()
            computed.pop("nps", None)
            conn.execute(profiles.update().where(profiles.c.id == pid).values(computed=computed))
    store.upgrade(log.engine)
    with log.engine.connect() as conn:
        filled = {r.id: r.computed.get("nps") for r in conn.execute(sa.select(profiles))}
    assert filled == kept
    log.process()
    tree = {"latest_nps": {"op": "=", "value": 0, "within_days": 1}}
    assert member_ids(log.engine, log.settings, tree, now=clock.now()) == {
        log.profile_of("user_id", "u1")
    }


def test_incremental_refresh_reads_the_written_profiles_by_their_index(log: Log) -> None:
    """The profiles written since a refresh are a range of the write log, their memberships
    read through the members' key by profile (migration 0020); on SQLite the shipped kinds
    of condition are evaluated on the numbers the log carries, without reading a profile
    row; others read each written profile by its key, not every profile."""
    from closedloop.mood.index import ensure_basis
    from closedloop.segments.store import (
        numbers_columns,
        numbers_usable,
        written_members_query,
        written_memberships,
        written_numbers_query,
    )

    now = clock.now()
    ensure_basis(log.engine, log.settings, now)
    numbers = [{"mood": "positive"}, {"latest_nps": {"op": ">=", "value": 9, "within_days": 90}},
               {"not": {"churn_risk": True}}]  # fmt: skip
    with log.engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.exec_driver_sql("SET enable_seqscan = off")
        rows = written_members_query(
            conn, log.settings, [{"trait": {"name": "plan", "op": "present"}}], 3, 5, now,
            lambda _n: {},
        )  # fmt: skip
        stored = written_memberships(3, 5)
        plans = [query_plan(conn, query) for query in (rows, stored)]
        if not pg:
            assert numbers_usable(conn, log.settings, now)
            query = written_numbers_query(conn, log.settings, numbers, 3, 5, now, lambda _n: {})
            plans.append(query_plan(conn, query))
            # the numbers evaluated in the pass that reads the memberships, in the log's order
            columns = numbers_columns(conn, log.settings, numbers, now, lambda _n: {})
            plans.append(query_plan(conn, written_memberships(3, 5, columns)))
        else:
            assert not numbers_usable(conn, log.settings, now)
    assert all("profile_writes" in plan for plan in plans), plans
    members_key = "pk_segment_members" if pg else "segment_members USING PRIMARY KEY (profile_id=?)"
    assert members_key in plans[1], plans[1]
    if not pg:  # a range of the log, both ends bound
        assert all("PRIMARY KEY (seq>? AND seq<?)" in plan for plan in plans), plans
        assert "sqlite_autoindex_profiles_1 (id=?)" in plans[0], plans[0]
        assert "profiles" not in plans[1] and "profiles " not in plans[2], plans
        assert members_key in plans[3], plans[3]
        assert "profiles " not in plans[3] and "TEMP B-TREE" not in "".join(plans), plans
    else:
        assert "pk_profile_writes" in plans[0], plans[0]


def _assert_stored_members_as_evaluated(log: Log) -> None:
    """Every saved segment's stored members are those a full evaluation gives now."""
    from closedloop import segments as saved

    now = clock.now()
    for one in saved.list_segments(log.engine):
        stored = {
            m["id"] for m in saved.stored_members(log.engine, one.name, after=None, limit=10**4)
        }
        evaluated = saved.member_ids(log.engine, log.settings, one.tree, now=now)
        assert stored == evaluated, one.name


def test_incremental_refresh_on_the_logged_numbers_agrees_with_a_full_evaluation(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped segments (mood, churn risk, promoters, detractors), and one naming them,
    refreshed on the numbers the write log carries, and one that also compares a trait (on
    the rows), give the members a full evaluation gives: after answers, a late answer, a
    visit to the cancellation page and a merge of an anonymous promoter."""
    from closedloop import segments as saved
    from closedloop.mood.index import ensure_basis
    from closedloop.segments import store as segment_store

    used: list[int] = []
    real = segment_store.numbers_columns

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_store, "numbers_columns", spy)
    _random_shop(log, seed=5)
    ensure_basis(log.engine, log.settings)
    # one on the numbers through a shipped segment it names, one that needs the rows
    for name, text in (
        ("keen", "in segment promoters or churn risk"),
        ("gold_fans", 'mood is positive and trait plan = "gold" or latest nps >= 9'),
    ):
        saved.save_segment(log.engine, log.settings, name, parse_condition(text), create=True)
    saved.refresh(log.engine, log.settings)
    log.send(
        {"type": "track", "userId": "u1", "event": "NPS Answered", "properties": {"score": 10},
         "timestamp": _days_ago(1)},
        {"type": "track", "userId": "u2", "event": "NPS Answered", "properties": {"score": 10},
         "timestamp": _days_ago(1)},
        {"type": "page", "userId": "u3", "properties": {"path": "/account/kuendigung"},
         "timestamp": _days_ago(0.2)},
        {"type": "track", "anonymousId": "kiosk-9", "event": "NPS Answered",
         "properties": {"score": 9}, "timestamp": _days_ago(0.1)},
        {"type": "identify", "anonymousId": "kiosk-9", "userId": "u4", "timestamp": _days_ago(0)},
    )  # fmt: skip
    log.process()
    # a batch of its own: u2 written twice since the refresh, the later numbers count
    log.send(
        {"type": "track", "userId": "u2", "event": "NPS Answered", "properties": {"score": 0},
         "timestamp": _days_ago(0.5)},
        {"type": "track", "userId": "u2", "event": "NPS Answered", "properties": {"score": 10},
         "timestamp": _days_ago(300)},
    )  # fmt: skip
    log.process()
    saved.refresh(log.engine, log.settings, incremental=True)
    if log.engine.dialect.name == "sqlite":  # (PostgreSQL reads the written rows)
        assert sum(used) == 6  # the shipped five and `keen` on the numbers, not `gold_fans`
    _assert_stored_members_as_evaluated(log)


@pytest.mark.parametrize("basis_lost", [False, True])
def test_incremental_refresh_of_many_numbered_segments_agrees_with_a_full_evaluation(
    log: Log, monkeypatch: pytest.MonkeyPatch, basis_lost: bool
) -> None:
    """More segments on the logged numbers than one query's columns (the first 50 read with
    the stored members, the rest in a second pass), and, with `basis_lost`, a mood basis
    that is no longer usable once the refresh holds the lock (the written profiles' rows
    read instead): the members a full evaluation gives."""
    from closedloop import segments as saved
    from closedloop.mood.index import ensure_basis
    from closedloop.segments import store as segment_store

    _random_shop(log, seed=9)
    ensure_basis(log.engine, log.settings)
    for n in range(56):
        mood_is = ("positive", "negative")[n % 2]
        text = f"latest nps >= {n % 11} within {30 + n} days or mood is {mood_is}"
        saved.save_segment(
            log.engine, log.settings, f"n{n:02d}", parse_condition(text), create=True
        )
    saved.refresh(log.engine, log.settings)
    log.send(
        *[
            {"type": "track", "userId": f"u{k}", "event": "NPS Answered",
             "properties": {"score": (k * 7) % 11}, "timestamp": _days_ago(k / 3)}
            for k in range(1, 9)
        ],
        {"type": "page", "userId": "u3", "properties": {"path": "/account/kuendigung"},
         "timestamp": _days_ago(0.2)},
    )  # fmt: skip
    log.process()
    calls: list[bool] = []
    real = segment_store.numbers_usable

    def usable(*args: Any, **kwargs: Any) -> bool:
        found = real(*args, **kwargs) and not (basis_lost and calls)
        calls.append(found)
        return found

    monkeypatch.setattr(segment_store, "numbers_usable", usable)
    report = saved.refresh(log.engine, log.settings, incremental=True)
    assert report.entered + report.exited > 0  # the answers moved members
    if log.engine.dialect.name == "sqlite":
        assert calls == [True, not basis_lost]  # read, then checked again under the lock
    _assert_stored_members_as_evaluated(log)


@pytest.mark.parametrize(
    "condition",
    [
        'did "Product Viewed" with category = "Socken" at least 2 times and mood is positive',
        'consent surveys and did "Product Viewed" and not churn risk',
        'did "Product Viewed" within 300 days and not did "Article Shared"',
        'did "Product Viewed" and (latest nps >= 9 or churn risk)',
        'did "Product Viewed" with category = "Socken" at least 2 times or mood is positive',
        'did "Article Shared" or did "Product Viewed" with category = "Laufschuhe"',
        'did "Product Viewed" within 300 days or (consent surveys and not churn risk)',
        'did "Product Viewed" at least 11 times within 400 days or did "Article Shared"',
        'latest nps >= 9 or did "Article Shared" within 200 days or trait city = "Dresden"',
    ],
)
def test_preview_of_a_tallied_did_and_more_counts_and_samples_members(
    log: Log, condition: str
) -> None:
    """A count that meets the event tallies with the other conditions' own ids gives the
    members the whole condition selects."""
    _random_shop(log, seed=11)
    now = clock.now()
    tree = parse_condition(condition)
    expected = member_ids(log.engine, log.settings, tree, now=now)
    assert expected
    found = preview(log.engine, log.settings, tree, now=now, sample=3)
    assert found.count == len(expected)
    assert {m["id"] for m in found.sample} <= expected
    assert len(found.sample) == min(3, len(expected))


_TALLIED_AND_MORE = [
    'did "Product Viewed" with category = "Socken" at least 2 times and mood is positive',
    'did "Product Viewed" within 300 days and not did "Article Shared"',
    'did "Product Viewed" with category = "Socken" at least 2 times or mood is positive',
    'did "Article Shared" or did "Product Viewed" with category = "Laufschuhe"',
    'latest nps >= 9 or did "Article Shared" within 200 days or trait city = "Dresden"',
]


def test_sqlite_live_count_in_parts_equals_the_members_for_any_number_of_parts(
    log: Log,
) -> None:
    """SQLite counts a tallied `did` with more as ranges of profile ids at once (each on its
    own connection): every number of parts gives the members the whole condition selects,
    each part a range of its own, the rest's index still chosen in each."""
    from closedloop.config import SegmentSettings

    if log.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL runs one query (its own parallel workers)")
    _random_shop(log, seed=11)
    now = clock.now()
    ranged: list[str] = []

    @sa.event.listens_for(log.engine, "before_cursor_execute")
    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "(+ profiles.id)" in statement and statement.startswith("SELECT count(*)"):
            ranged.append(statement)

    for condition in _TALLIED_AND_MORE:
        tree = parse_condition(condition)
        expected = member_ids(log.engine, log.settings, tree, now=now)
        assert expected, condition
        for parts in (1, 2, 3, 16):
            settings = log.settings.model_copy(
                update={"segments": SegmentSettings(count_parts=parts)}
            )
            ranged.clear()
            found = preview(log.engine, settings, tree, now=now, sample=3)
            assert found.count == len(expected), (condition, parts)
            assert {m["id"] for m in found.sample} <= expected
            assert len(ranged) == (parts if parts > 1 else 0), (condition, parts)
    sa.event.remove(log.engine, "before_cursor_execute", seen)


def test_sqlite_count_ranges_cover_every_id_once_and_keep_the_rest_s_index(log: Log) -> None:
    from closedloop.segments.preview import _within, id_ranges

    for parts in (1, 2, 3, 7, 16):
        ranges = id_ranges(parts)
        assert len(ranges) == parts
        for key in ("", "a", "p_", "p_000", "p_7ff", "p_800ffff", "p_fff", "p_g", "q", "\uffff"):
            inside = [
                (low is None or key >= low) and (high is None or key < high) for low, high in ranges
            ]
            assert inside.count(True) == 1, (parts, key, ranges)
    if log.engine.dialect.name != "sqlite":
        return
    with log.engine.connect() as conn:
        query = (
            sa.select(sa.func.count())
            .select_from(profiles)
            .where(
                sa.func.json_extract(profiles.c.derived, "$.mood_k") >= 0.5,
                *_within(id_ranges(2)[1]),
            )
        )
        plan = query_plan(conn, query)
    assert "ix_profiles_mood_k" in plan and "autoindex" not in plan, plan


def test_live_count_of_a_tallied_did_or_more_reads_no_row_of_every_profile(log: Log) -> None:
    """`did ... or mood is positive` is counted as disjoint parts from their own indexes
    (the tallies' ids, then the mood index's without those), not by probing the tallies once
    for every profile (an `or` in one condition keeps PostgreSQL from a semi-join: 2.6 s at
    1M profiles)."""
    from closedloop import mood
    from closedloop.segments.compile import tallied_part
    from closedloop.segments.preview import _tallied_count

    if log.engine.dialect.name != "postgresql":
        pytest.skip("SQLite counts it in ranges at once (the test before)")
    _random_shop(log, seed=11)
    now = clock.now()
    mood.ensure_basis(log.engine, log.settings, now)
    tree = parse_condition('did "Product Viewed" at least 2 times or mood is positive')
    part = tallied_part(tree)
    assert part is not None and part.joined_by == "or" and part.rest == {"mood": "positive"}
    with log.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
        counted, _sample = _tallied_count(conn, log.settings, tree, part, now=now, sample=3)
        plan = query_plan(conn, counted)
    assert "ix_event_tallies_event" in plan and "ix_profiles_mood_k" in plan, plan
    assert "SCAN profiles" not in plan and "Seq Scan" not in plan, plan


def test_incremental_refresh_reads_the_shipped_conditions_from_the_write_log_alone(
    log: Log,
) -> None:
    """SQLite: the mood and NPS numbers the shipped segments compare ride in the write log
    (migration 0019), so evaluating them opens no profile table or index at all, and gives
    the members a full evaluation gives."""
    from closedloop import mood
    from closedloop.segments.store import latest_rows, written_numbers_query

    if log.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL must check each newly written row in the table anyway")
    _random_shop(log, seed=5)
    now = clock.now()
    mood.ensure_basis(log.engine, log.settings, now)
    trees = [
        parse_condition(text)
        for text in (
            "mood is positive",
            "mood is negative",
            "churn risk",
            "latest nps >= 9 within 90 days",
            "latest nps <= 6 within 90 days",
        )
    ]
    with log.engine.connect() as conn:
        query = written_numbers_query(conn, log.settings, trees, 0, 10**9, now, lambda _name: {})
        rows = list(latest_rows(conn.execute(query)).values())
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        program = conn.exec_driver_sql("EXPLAIN " + sql).all()
        roots = dict(
            conn.exec_driver_sql(
                "SELECT rootpage, tbl_name FROM sqlite_master WHERE rootpage > 0"
            ).all()
        )
    opened = {roots.get(row[3]) for row in program if row[1] == "OpenRead"}
    assert opened == {"profile_writes"}, opened
    found = [{row[0] for row in rows if row[n]} for n in range(1, len(trees) + 1)]
    assert sum(1 for members in found if members) >= 3, found  # members to compare
    for members, tree in zip(found, trees, strict=True):
        assert members == member_ids(log.engine, log.settings, tree, now=now), tree


def test_a_profile_written_again_during_a_refresh_waits_for_the_next(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member the processor writes again between an incremental refresh's evaluation and
    its write is left to the next refresh (it was entered a second time: a key violation)."""
    from closedloop import segments
    from closedloop.segments import store as segment_store

    def plan(value: str, **more: Any) -> dict[str, Any]:
        traits = {"plan": value, **more}
        return {"type": "identify", "userId": "u1", "traits": traits, "timestamp": _days_ago(0)}

    log.send(plan("gold"))
    log.process()
    tree = {"trait": {"name": "plan", "op": "=", "value": "gold"}}
    segments.save_segment(log.engine, log.settings, "gold", tree, create=True)
    log.send(plan("gold", city="Dresden"))  # written since, still a member
    log.process()
    evaluate_written = segment_store._evaluate_written

    def and_meanwhile(*args: Any, **kwargs: Any) -> dict[str, set[str]]:
        found = evaluate_written(*args, **kwargs)
        log.send(plan("gold", city="Leipzig"))  # a later batch writes her again
        log.process()
        return found

    monkeypatch.setattr(segment_store, "_evaluate_written", and_meanwhile)
    segments.refresh(log.engine, log.settings, incremental=True)
    monkeypatch.undo()
    segments.refresh(log.engine, log.settings, incremental=True)
    now = clock.now()
    stored = {m["id"] for m in segments.stored_members(log.engine, "gold", after=None, limit=10)}
    assert (
        stored
        == member_ids(log.engine, log.settings, tree, now=now)
        == {log.profile_of("user_id", "u1")}
    )


def test_sqlite_count_in_parts_of_an_in_memory_store_runs_on_its_one_connection() -> None:
    """Each connection to `sqlite://` opens a store of its own: the parts of a count run one
    after the other on the request's connection instead."""
    from closedloop import store
    from closedloop.config import SegmentSettings
    from tests.conftest import make_settings

    engine = store.create_store_engine("sqlite://")
    store.upgrade(engine)
    config = make_settings("sqlite://").model_copy(
        update={"segments": SegmentSettings(count_parts=4)}
    )
    tree = parse_condition('did "Product Viewed" at least 2 times or mood is positive')
    assert preview(engine, config, tree, now=clock.now()).count == 0
    engine.dispose()


def test_an_event_on_anothers_device_counts_for_the_customer_it_was_applied_to(
    log: Log,
) -> None:
    """Berta subscribes and opens the cancellation page on the family tablet, whose anonymous
    id is Anna's, giving her own e-mail: the processor applies both to Berta
    (`event_attributions`). Every way a segment reads them agrees: the tallies, the log
    (`did ... with` and `visited page`), the reference evaluator, the incremental refresh
    and the explanation of a profile. None counts them for Anna."""
    from closedloop import segments

    log.send(
        {"type": "identify", "userId": "anna", "anonymousId": "family-tablet",
         "traits": {"email": "anna@example.com"}, "timestamp": _days_ago(2)},
        {"type": "identify", "userId": "berta", "anonymousId": "berta-phone",
         "traits": {"email": "berta@example.com"}, "timestamp": _days_ago(2)},
    )  # fmt: skip
    log.process()
    anna, berta = log.profile_of("user_id", "anna"), log.profile_of("user_id", "berta")
    assert anna and berta and anna != berta
    conditions = {
        "tallied": 'did "Newsletter Subscribed"',
        "property": 'did "Newsletter Subscribed" with list = "weekly"',
        "twice": 'did "Newsletter Subscribed" with list = "weekly" at least 2 times',
        "page": 'visited page "/account/kuendigung*" within 7 days',
    }
    trees = {name: parse_condition(text) for name, text in conditions.items()}
    for name, tree in trees.items():
        segments.save_segment(log.engine, log.settings, name, tree, create=True)
    on_the_tablet = {
        "anonymousId": "family-tablet",
        "context": {"traits": {"email": "Berta@Example.com"}},
        "timestamp": _days_ago(1),
    }
    log.send(
        {"type": "track", "event": "Newsletter Subscribed", "properties": {"list": "weekly"},
         **on_the_tablet},
        {"type": "track", "event": "Newsletter Subscribed", "properties": {"list": "weekly"},
         **on_the_tablet},
        {"type": "page", "properties": {"path": "/account/kuendigung"}, **on_the_tablet},
    )  # fmt: skip
    log.process()
    segments.refresh(log.engine, log.settings, incremental=True)  # the reference evaluator
    now = clock.now()
    facts = all_facts(log.engine)
    for name, tree in trees.items():
        found_by_log, evaluated = _by_the_log(log, tree, now), _evaluated(log, tree, now, facts)
        stored = {m["id"] for m in segments.stored_members(log.engine, name, after=None, limit=9)}
        found = member_ids(log.engine, log.settings, tree, now=now)
        assert found == found_by_log == evaluated == stored == {berta}, name
    for who, expected in ((berta, True), (anna, False)):
        explained = segments.explain_profile(log.engine, log.settings, who, now=now)
        matched = {e["segment"]: e["matched"] for e in explained if e["segment"] in trees}
        assert matched == dict.fromkeys(trees, expected)

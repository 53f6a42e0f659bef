"""Trait indexes (SQLite, `segments.trait_index`): the server keeps the indexes the setting
names, a text equality on such a trait reads its index, and it selects exactly what the
typed comparison and the reference evaluator select, whatever JSON type the trait holds."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import SegmentSettings
from closedloop.profiles._tables import profiles
from closedloop.segments import ProfileFacts, ensure_trait_indexes, evaluate, member_ids
from closedloop.segments.compile import compile_condition
from tests.conftest import make_settings

VALUES: list[Any] = [
    "Dresden", "dresden", "5", 5, 5.0, True, None, ["Dresden"], {"a": 1}, '["Dresden"]',
    "[", "{", "", "Dresden ",
]  # fmt: skip


def _fill(engine: Engine) -> None:
    now = clock.now()
    rows = [
        {
            "id": f"p{n:02d}",
            "merged_into": "p00" if n == 1 else None,
            "customer_key": None,
            "user_ids": [],
            "anonymous_ids": 0,
            "traits": {} if value is ... else {"city": [value, 0, "web"]},
            "computed": {},
            "consent": {},
            "masterdata": {},
            "quality": [],
            "derived": {},
            "created_at": now,
            "updated_at": now,
            "created_event_id": 0,
        }
        for n, value in enumerate([*VALUES, ...])
    ]
    with engine.begin() as conn:
        conn.execute(profiles.insert(), rows)


def test_indexed_and_typed_comparisons_agree(engine: Engine, db_url: str) -> None:
    settings = make_settings(db_url)
    _fill(engine)
    created = ensure_trait_indexes(engine, settings)
    if engine.dialect.name == "postgresql":
        assert created == []
    else:
        assert created == [
            f"created ix_profiles_trait_{name}" for name in sorted(settings.segments.indexed_traits)
        ]
    with engine.connect() as conn:
        facts = {
            r.id: ProfileFacts(traits=r.traits, consent={}, derived={})
            for r in conn.execute(
                sa.select(profiles.c.id, profiles.c.traits).where(profiles.c.merged_into.is_(None))
            )
        }
    plain = settings.model_copy(update={"segments": SegmentSettings(indexed_traits=())})
    now = clock.now()
    trees: list[dict[str, Any]] = [
        {"trait": {"name": "city", "op": "=", "value": v}}
        for v in VALUES
        if isinstance(v, str | int | float)  # the scalars a condition can hold
    ]
    trees.append({"trait": {"name": "city", "op": "in", "value": ["Dresden", "5", 5, "["]}})
    trees.append({"not": {"trait": {"name": "city", "op": "=", "value": "Dresden"}}})
    for tree in trees:
        indexed = member_ids(engine, settings, tree, now=now)
        typed = member_ids(engine, plain, tree, now=now)
        reference = {
            pid
            for pid, f in facts.items()
            if evaluate(tree, f, now=now, mood=settings.mood, segment=lambda _n: {})
        }
        assert indexed == typed == reference, tree
    assert member_ids(engine, settings, trees[0], now=now) == {"p00"}


@pytest.mark.parametrize("condition", [("=", "Dresden"), ("in", ["Dresden", "Leipzig"])])
def test_a_text_equality_reads_the_index(
    engine: Engine, db_url: str, condition: tuple[str, Any]
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("trait indexes are SQLite's")
    settings = make_settings(db_url)
    ensure_trait_indexes(engine, settings)
    op, value = condition
    tree = {"trait": {"name": "city", "op": op, "value": value}}
    with engine.connect() as conn:
        where = compile_condition(
            tree, "sqlite", now=clock.now(), mood=settings.mood, segment=lambda _n: {},
            indexed_traits=frozenset(settings.segments.indexed_traits),
        )  # fmt: skip
        query = sa.select(sa.func.count()).select_from(profiles)
        query = query.where(profiles.c.merged_into.is_(None), where)
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "ix_profiles_trait_city" in plan, plan


def test_the_indexes_follow_the_setting(engine: Engine, db_url: str) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("trait indexes are SQLite's")
    settings = make_settings(db_url)
    ensure_trait_indexes(engine, settings)
    assert ensure_trait_indexes(engine, settings) == []  # nothing to do
    other = settings.model_copy(
        update={"segments": SegmentSettings(indexed_traits=("city", "plan"))}
    )
    assert ensure_trait_indexes(engine, other) == [
        *(
            f"dropped ix_profiles_trait_{name}"
            for name in sorted(settings.segments.indexed_traits)
            if name != "city"
        ),
        "created ix_profiles_trait_plan",
    ]
    with engine.connect() as conn:
        indexes = set(
            conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND name LIKE 'ix_profiles_trait%'"
            ).scalars()
        )
    assert indexes == {"ix_profiles_trait_city", "ix_profiles_trait_plan"}


def test_trait_names_are_checked() -> None:
    for bad in ("ci ty", "city'); DROP TABLE profiles; --", "", "x" * 65, 'a"b', "a..b", "a.b.c"):
        with pytest.raises(ValueError, match="indexed_traits"):
            SegmentSettings(indexed_traits=(bad,))

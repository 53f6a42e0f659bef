"""Conditions evaluated now: count and sample members without saving anything; why a profile
is (not) in each segment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from closedloop.config import Settings
from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.profiles._tables import event_tallies, profiles
from closedloop.profiles.masterdata import full_name
from closedloop.profiles.read import resolve_profile_id
from closedloop.segments.compile import TalliedPart, tallied_part, tally_ids
from closedloop.segments.evaluate import explain
from closedloop.segments.language import parse_condition, to_text, validate_tree
from closedloop.segments.store import (
    condition_where,
    load_facts,
    resolver,
    saved_trees,
)
from closedloop.store import sqlite_file

__all__ = [
    "Preview",
    "condition_tree",
    "explain_profile",
    "id_ranges",
    "member_ids",
    "preview",
]


@dataclass(frozen=True)
class Preview:
    count: int
    sample: list[dict[str, Any]]
    tree: dict[str, Any]
    text: str


def condition_tree(condition: Any) -> dict[str, Any]:
    """A condition as text or as a JSON tree, validated."""
    if isinstance(condition, str):
        return parse_condition(condition)
    if isinstance(condition, dict):
        return validate_tree(condition)
    raise InvalidInputError(
        'give `condition` as text (`mood is positive`) or a tree (`{"mood": "positive"}`)',
        field="condition",
    )


def member_ids(
    engine: Engine, settings: Settings, tree: dict[str, Any], *, now: datetime
) -> set[str]:
    """The profiles the condition selects as of `now` (evaluated, not stored)."""
    with engine.connect() as conn:
        where = condition_where(conn, settings, tree, now)
        return set(conn.execute(sa.select(profiles.c.id).where(where)).scalars())


def preview(
    engine: Engine, settings: Settings, condition: Any, *, now: datetime, sample: int = 20
) -> Preview:
    tree = condition_tree(condition)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # An interactive count: PostgreSQL's JIT spends 60 to 150 ms compiling each of
            # these queries at 1M profiles, more than it saves them.
            conn.exec_driver_sql("SET LOCAL jit = off")
        part = tallied_part(tree)
        chosen: ColumnElement[bool]
        if part is not None and conn.dialect.name != "postgresql" and _probes(part):
            whole = condition_where(conn, settings, tree, now)
            count = _count_in_parts(engine, conn, settings, whole, part, now=now)
            chosen = profiles.c.id.in_(sa.select(profiles.c.id).where(whole).limit(sample))
        else:
            if part is None:
                chosen = condition_where(conn, settings, tree, now)
                counted = sa.select(sa.func.count()).select_from(profiles).where(chosen)
            else:
                counted, chosen = _tallied_count(conn, settings, tree, part, now=now, sample=sample)
            count = int(conn.execute(counted).scalar_one())
        rows = conn.execute(
            sa.select(profiles.c.id, profiles.c.customer_key, profiles.c.masterdata)
            .where(chosen)
            .order_by(profiles.c.id)
            .limit(sample)
        ).all()
    return Preview(
        count=count,
        sample=[
            {"id": r.id, "customer_key": r.customer_key, "name": full_name(r.masterdata)}
            for r in rows
        ],
        tree=tree,
        text=to_text(tree),
    )


def _probes(part: TalliedPart) -> bool:
    """Whether counting the condition probes the event tallies once for each of many profiles
    (SQLite: a B-tree search each, some 3 µs): the tallied `did` meets other conditions."""
    return part.rest is not None or part.joined_by == "or"


def id_ranges(parts: int) -> list[tuple[str | None, str | None]]:
    """`parts` ranges of profile ids, `[low, high)` (None: open), covering every string in
    order and of about equal size for the processor's ids (`p_` and 24 hex digits of a hash,
    `closedloop.profiles.processor.profile_id_for`); other ids fall into the first or the
    last range, still counted once."""
    cuts = [f"p_{n * 4096 // parts:03x}" for n in range(1, parts)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def _within(bounds: tuple[str | None, str | None]) -> list[ColumnElement[bool]]:
    """The profiles of one range, as a filter that leaves SQLite's choice of index alone
    (SQLite's unary `+`: the range of the profiles' key would read every row of the range)."""
    low, high = bounds
    key = UnaryExpression(profiles.c.id, operator=operators.custom_op("+"), type_=sa.String())
    found: list[ColumnElement[bool]] = []
    if low is not None:
        found.append(key >= sa.bindparam(None, low, sa.String()))
    if high is not None:
        found.append(key < sa.bindparam(None, high, sa.String()))
    return found


def _count_in_parts(
    engine: Engine,
    conn: sa.Connection,
    settings: Settings,
    whole: ColumnElement[bool],
    part: TalliedPart,
    *,
    now: datetime,
) -> int:
    """SQLite: the count of a condition whose tallied `did` meets other conditions, as counts
    of ranges of profile ids run at once, each on its own connection.

    SQLite runs a query on one core, and such a count spends it on a search of the tallies'
    key for each candidate profile; the ranges share that work out (`segments.count_parts`).
    `and`: the tally rows among the rest's ids of each range. `or` with one tallied `did`:
    its count plus the rest's minus their `and` (in ranges), so no profile outside either
    is visited; more tallied `did`s: the whole condition in ranges.

    Each part reads its own snapshot of the store, taken within milliseconds of the others:
    a commit in between can move the count by the profiles it changed, as a count taken a
    moment later would."""
    ranges = id_ranges(settings.segments.count_parts)
    rest = part.rest

    def count(query: sa.Select[Any]) -> sa.Select[Any]:
        return sa.select(sa.func.count()).select_from(query.subquery())

    queries: list[tuple[int, sa.Select[Any]]]
    if rest is not None and (part.joined_by == "and" or len(part.dids) == 1):
        tallied = tally_ids(part.dids[0], conn.dialect.name, now=now, mood=settings.mood)
        others = sa.select(profiles.c.id).where(condition_where(conn, settings, rest, now))
        sign = 1 if part.joined_by == "and" else -1
        queries = [
            (sign, count(tallied.where(event_tallies.c.profile_id.in_(others.where(*_within(r))))))
            for r in ranges
        ]
        if part.joined_by == "or":
            queries += [(1, count(tallied)), (1, count(others))]
    else:  # `whole`: the condition of the tree, compiled once for the sample as well
        queries = [
            (1, sa.select(sa.func.count()).select_from(profiles).where(whole, *_within(r)))
            for r in ranges
        ]
    counts = _run_at_once(engine, conn, [query for _sign, query in queries])
    return max(0, sum(sign * found for (sign, _query), found in zip(queries, counts, strict=True)))


@cache
def _pool() -> ThreadPoolExecutor:
    """The threads that run the parts of counts, for the whole process."""
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="closedloop-count")


def _run_at_once(engine: Engine, conn: sa.Connection, queries: list[sa.Select[Any]]) -> list[int]:
    """The counts of `queries`, each on its own connection, at once (SQLite leaves Python's
    lock while it steps through a query, so the threads use one core each); on `conn`, one
    after the other, when there is only one or the store is in memory (each connection
    would open an empty one)."""
    if len(queries) == 1 or sqlite_file(engine) is None:
        return [int(conn.execute(query).scalar_one()) for query in queries]

    def run(query: sa.Select[Any]) -> int:
        with engine.connect() as own:
            return int(own.execute(query).scalar_one())

    return list(_pool().map(run, queries))


def _tallied_count(
    conn: sa.Connection,
    settings: Settings,
    tree: dict[str, Any],
    part: TalliedPart,
    *,
    now: datetime,
    sample: int,
) -> tuple[sa.Select[Any], ColumnElement[bool]]:
    """The count of a condition with tallied parts, from their indexes (tally rows belong to
    live profiles, one each), and which profiles to sample.

    `and`: the tally rows among the ids the rest's own indexes give. `or`: the sum of
    disjoint parts, each tallied `did`'s ids and then the rest's, without those an earlier
    part has (`NOT EXISTS`, an anti-join): no correlated probe of the tallies for every
    profile (which an `or` in one condition forces on PostgreSQL), no sort of the union's
    ids. The sample: the first members found (the first ids would need every member first),
    by the whole condition when there is more than one part (no list of the rest's ids)."""
    dialect, mood = conn.dialect.name, settings.mood
    rest = part.rest
    others = (
        sa.select(profiles.c.id).where(condition_where(conn, settings, rest, now))
        if rest is not None
        else None
    )
    if part.joined_by == "and":
        ids = tally_ids(part.dids[0], dialect, now=now, mood=mood)
        if others is not None:
            ids = ids.where(event_tallies.c.profile_id.in_(others))
        counted = sa.select(sa.func.count()).select_from(ids.subquery())
        first = ids.limit(sample)
    else:
        terms: list[sa.Select[Any]] = []
        earlier: list[dict[str, Any]] = []

        def outside(key: Any) -> list[ColumnElement[bool]]:
            """Not among the ids of the tallied parts before (each its own alias)."""
            found = []
            for spec in earlier:
                table = event_tallies.alias()
                probe = tally_ids(spec, dialect, now=now, mood=mood, table=table)
                found.append(
                    ~sa.exists(
                        probe.with_only_columns(sa.literal(1)).where(table.c.profile_id == key)
                    )
                )
            return found

        for spec in part.dids:
            table = event_tallies.alias()
            ids = tally_ids(spec, dialect, now=now, mood=mood, table=table)
            terms.append(ids.where(*outside(table.c.profile_id)))
            earlier.append(spec)
        if others is not None:
            terms.append(others.where(*outside(profiles.c.id)))
        sizes = [
            sa.select(sa.func.count()).select_from(term.subquery()).scalar_subquery()
            for term in terms
        ]
        counted = sa.select(sum(sizes[1:], sizes[0]))
        first = terms[0].limit(sample)
    if rest is not None or len(part.dids) > 1:
        whole = condition_where(conn, settings, tree, now)
        first = sa.select(profiles.c.id).where(whole).limit(sample)
    return counted, profiles.c.id.in_(first)


def explain_profile(
    engine: Engine, settings: Settings, profile_id: str, *, now: datetime
) -> list[dict[str, Any]]:
    """For each saved segment: is the profile a member, and why (each condition's value)."""
    with engine.connect() as conn:
        found = resolve_profile_id(conn, profile_id)
        if found is None:
            raise NotFoundError(f"no profile `{profile_id[:60]}`")
        facts = load_facts(conn, profiles.c.id == found)[found]
        trees = saved_trees(conn)
    resolve = resolver(trees)
    return [
        {"segment": name, **explain(tree, facts, now=now, mood=settings.mood, segment=resolve)}
        for name, tree in trees.items()
    ]

"""Conditions evaluated now: count and sample members without saving anything; why a profile
is (not) in each segment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from closedloop.config import Settings
from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.profiles._tables import event_tallies, profiles
from closedloop.profiles.masterdata import full_name
from closedloop.profiles.read import resolve_profile_id
from closedloop.segments.compile import TalliedPart, tallied_part
from closedloop.segments.evaluate import explain
from closedloop.segments.language import parse_condition, to_text, validate_tree
from closedloop.segments.store import (
    condition_where,
    load_facts,
    resolver,
    saved_trees,
)

__all__ = [
    "Preview",
    "condition_tree",
    "explain_profile",
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
        part = tallied_part(tree, conn.dialect.name, now=now, mood=settings.mood)
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
    live profiles, one each): for `and`, the tally rows among the ids the rest's own indexes
    give; for `or`, the union of the tallied ids and the rest's (no correlated probe of the
    tallies per profile, which an `or` forces on PostgreSQL). And which profiles to sample:
    the first members found (the first ids would need every member first), by the whole
    condition when there is more than one part (no list of the rest's ids)."""
    (first_ids, *more), rest = part.ids, part.rest
    others = (
        sa.select(profiles.c.id).where(condition_where(conn, settings, rest, now))
        if rest is not None
        else None
    )
    ids: sa.Select[Any] | sa.CompoundSelect[Any] = first_ids
    if part.joined_by == "and" and others is not None:
        ids = first_ids.where(event_tallies.c.profile_id.in_(others))
    elif part.joined_by == "or" and (more or others is not None):
        ids = sa.union(first_ids, *more, *([others] if others is not None else []))
    first = ids.limit(sample)
    if rest is not None or more:
        whole = condition_where(conn, settings, tree, now)
        first = sa.select(profiles.c.id).where(whole).limit(sample)
    return sa.select(sa.func.count()).select_from(ids.subquery()), profiles.c.id.in_(first)


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

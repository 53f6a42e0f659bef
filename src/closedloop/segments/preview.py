"""Conditions evaluated now: count and sample members without saving anything; why a profile
is (not) in each segment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.config import Settings
from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.profiles._tables import event_tallies, profiles
from closedloop.profiles.masterdata import full_name
from closedloop.profiles.read import resolve_profile_id
from closedloop.segments.compile import tallied_part
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
            # A tallied condition the whole one requires: counted from its index (tally rows
            # belong to live profiles, one each), for the rest among the ids its own indexes
            # give; sampled from the first members found (the first ids would need every
            # member first), for the rest by the whole condition (no list of the rest's ids).
            tallied, rest = part
            first = tallied.limit(sample)
            if rest is not None:
                others = sa.select(profiles.c.id).where(condition_where(conn, settings, rest, now))
                tallied = tallied.where(event_tallies.c.profile_id.in_(others))
                whole = condition_where(conn, settings, tree, now)
                first = sa.select(profiles.c.id).where(whole).limit(sample)
            counted = sa.select(sa.func.count()).select_from(tallied.subquery())
            chosen = profiles.c.id.in_(first)
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

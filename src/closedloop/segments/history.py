"""A person's segment history: the rows of `segment_changes` of some profiles.

A refresh appends its entries and exits to `segment_changes` in id order. An index on their
profile made each of them a random page of a large B-tree: a third of an incremental
refresh's writes on SQLite (docs/benchmarks.md, 2026-12-06). On SQLite that index is kept
apart and filled in batches instead (ADR 0016), as PostgreSQL's GIN indexes keep a pending
list: `segment_changes_by_profile` holds `(profile_id, change_id)` for every change up to a
mark (the `segment_changes` row of `processor_cursors`, its `event_id`); the changes after
the mark are a range of `segment_changes`' key, walked. `index_changes` moves the mark in
batches of `BATCH` ids: after every full refresh, and when more than `INDEX_AFTER` changes
wait (the segment refresher). Sorted by profile, a batch of changes lands on fewer pages
than the same changes one refresh at a time.

PostgreSQL keeps its index on `segment_changes.profile_id` and leaves the table empty: its
refreshes commit concurrently, so a change id below the mark could still become visible
after the mark passed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from closedloop.profiles._tables import processor_cursors
from closedloop.segments._tables import segment_changes, segment_changes_by_profile

__all__ = [
    "BATCH",
    "INDEX_AFTER",
    "changes_of",
    "forget_changes",
    "history_of",
    "index_changes",
    "indexed_upto",
    "segments_at",
    "unindexed",
]

_MARK = "segment_changes"
INDEX_AFTER = 100_000  # changes past the mark that make the segment refresher move it
BATCH = 25_000  # change ids a transaction of `index_changes` covers at most
_CACHE_KIB = 131_072  # its page cache (128 MB; at most about 25,000 pages change)


def indexed_upto(conn: sa.Connection) -> int | None:
    """The mark: every change up to this id is in `segment_changes_by_profile` (SQLite); None
    on PostgreSQL, whose index covers every change."""
    if conn.dialect.name == "postgresql":
        return None
    found = conn.execute(
        sa.select(processor_cursors.c.event_id).where(processor_cursors.c.name == _MARK)
    ).scalar()
    return int(found or 0)


def changes_of(conn: sa.Connection, profile_ids: Sequence[str] | sa.Select[Any]) -> Any:
    """The condition on `segment_changes` for the changes of `profile_ids` (a list, or a
    query of ids): those the batched index holds and those after its mark."""
    c = segment_changes.c
    mark = indexed_upto(conn)
    if mark is None:
        return c.profile_id.in_(profile_ids)
    by = segment_changes_by_profile.c
    indexed = sa.select(by.change_id).where(by.profile_id.in_(profile_ids))
    return sa.and_(c.profile_id.in_(profile_ids), sa.or_(c.id.in_(indexed), c.id > mark))


def unindexed(conn: sa.Connection) -> int:
    """How many changes are past the mark, by their ids (two probes of keys, no count; 0 on
    PostgreSQL)."""
    mark = indexed_upto(conn)
    if mark is None:
        return 0
    newest = conn.execute(sa.select(sa.func.max(segment_changes.c.id))).scalar()
    return max(0, int(newest or 0) - mark)


def index_changes(conn: sa.Connection, *, batch: int = BATCH) -> int:
    """In `conn`'s write transaction: put the changes past the mark, up to `batch` ids, into
    the batched index in profile order, and move the mark past them; how many were added
    (SQLite; 0 on PostgreSQL).

    The transaction's page cache is raised to `_CACHE_KIB` meanwhile: with SQLite's default
    (2 MB) the pages the batch changes spilled to the WAL file before the commit, and 34,000
    changes took 28 us each against 6 us with 256 MB (docs/benchmarks.md, 2026-12-06)."""
    mark = indexed_upto(conn)
    if mark is None:
        return 0
    c = segment_changes.c
    newest = conn.execute(sa.select(sa.func.max(c.id))).scalar()
    if newest is None or newest <= mark:
        return 0
    upto = min(int(newest), mark + batch)
    cache = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA cache_size = -{_CACHE_KIB}")
    try:
        added = conn.execute(
            segment_changes_by_profile.insert().from_select(
                ["profile_id", "change_id"],
                sa.select(c.profile_id, c.id)
                .where(c.id > mark, c.id <= upto)
                .order_by(c.profile_id, c.id),
            )
        ).rowcount
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(cache)}")
    moved = conn.execute(
        processor_cursors.update().where(processor_cursors.c.name == _MARK).values(event_id=upto)
    ).rowcount
    if not moved:
        conn.execute(processor_cursors.insert().values(name=_MARK, txid=0, event_id=upto, seq=0))
    return int(added)


def forget_changes(conn: sa.Connection, change_ids: Sequence[int]) -> None:
    """In `conn`'s transaction, before the changes `change_ids` are deleted: drop their rows
    from the batched index (found by each change's profile: the index's key)."""
    by, c = segment_changes_by_profile.c, segment_changes.c
    for start in range(0, len(change_ids), 500):
        theirs = sa.select(c.profile_id, c.id).where(c.id.in_(change_ids[start : start + 500]))
        conn.execute(
            segment_changes_by_profile.delete().where(
                sa.tuple_(by.profile_id, by.change_id).in_(theirs)
            )
        )


def history_of(
    conn: sa.Connection, profile_ids: Sequence[str] | sa.Select[Any]
) -> dict[str, list[Any]]:
    """Each profile's changes (`segment`, `change`, `at`), in the order they were recorded:
    for a list, 500 profiles a query."""
    c = segment_changes.c
    chunks = (
        [profile_ids]
        if isinstance(profile_ids, sa.Select)
        else [profile_ids[n : n + 500] for n in range(0, len(profile_ids), 500)]
    )
    found: dict[str, list[Any]] = {}
    for chunk in chunks:
        query = sa.select(c.profile_id, c.segment, c.change, c.at).where(changes_of(conn, chunk))
        for change in conn.execute(query.order_by(c.id)):
            found.setdefault(change.profile_id, []).append(change)
    return found


def segments_at(changes: Sequence[Any], at: Any) -> list[str]:
    """The segments a profile's changes (`history_of`) leave it in as of `at`: the last
    entry or exit recorded up to then, per segment."""
    state: dict[str, str] = {}
    for change in changes:
        if change.at <= at:
            state[change.segment] = change.change
    return sorted(segment for segment, last in state.items() if last == "entered")

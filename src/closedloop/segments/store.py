"""Saved segments and their membership: who is in, since when, every entry and exit.

`refresh` evaluates segments (the SQL of their conditions, as of `now`), compares with the
stored members and records what changed: `segment_members` holds who is in, and
`segment_changes` every `entered` and `exited` with its time and reason (feeds export deltas
from it), `segment_sizes` the size after each change. The server refreshes after the
processor applied events (at most every `SEGMENTS__REFRESH_AFTER_EVENTS_SECONDS`) and on a
schedule for time windows that pass (`SEGMENTS__REFRESH_SECONDS`, 15 minutes by default).
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import replacement_traverse

from closedloop import clock
from closedloop.config import Settings
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.mood.index import MoodBasis, ensure_basis, usable_basis
from closedloop.profiles._tables import (
    MAIN_CURSOR,
    WRITTEN_NUMBERS,
    event_attributions,
    processor_cursors,
    profile_writes,
    profiles,
)
from closedloop.runtime import cyclic_gc_paused
from closedloop.segments._tables import (
    mood_sizes,
    segment_changes,
    segment_members,
    segment_sizes,
    segments,
)
from closedloop.segments.compile import compile_condition, mood_score, reads_log
from closedloop.segments.evaluate import ProfileFacts, evaluate
from closedloop.segments.history import INDEX_AFTER, index_changes, unindexed
from closedloop.segments.language import references, to_text, validate_tree
from closedloop.segments.trait_index import ensure_trait_indexes
from closedloop.store import begin_write, driver_time, native_sql, to_epoch_us

__all__ = [
    "RefreshReport",
    "SavedSegment",
    "SegmentRefresher",
    "changes",
    "delete_segment",
    "forget_members",
    "get_segment",
    "index_history",
    "list_segments",
    "load_facts",
    "refresh",
    "resolver",
    "save_segment",
    "saved_trees",
    "sizes",
    "stored_members",
    "tree_of",
]

_log = logging.getLogger(__name__)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_MAX_SEGMENTS = 500


@dataclass(frozen=True)
class SavedSegment:
    name: str
    condition: str
    tree: dict[str, Any]
    size: int
    created_at: datetime
    updated_at: datetime
    refreshed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "condition": self.condition,
            "tree": self.tree,
            "size": self.size,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "refreshed_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
        }


@dataclass(frozen=True)
class RefreshReport:
    segments: int
    entered: int
    exited: int


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid segment name `{str(name)[:64]}`: lower-case letters, digits, `-` and `_`, "
            "at most 64",
            field="name",
        )


def _unknown(name: str) -> InvalidInputError:
    return InvalidInputError(f"no segment `{name}`: see `GET /v1/segments`", field="condition")


def tree_of(conn: sa.Connection, name: str) -> dict[str, Any]:
    tree = conn.execute(sa.select(segments.c.tree).where(segments.c.name == name)).scalar()
    if tree is None:
        raise _unknown(name)
    return dict(tree)


def saved_trees(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    """Every saved segment's condition tree, by name, in name order."""
    rows = conn.execute(sa.select(segments.c.name, segments.c.tree).order_by(segments.c.name))
    return {name: dict(tree) for name, tree in rows}


def resolver(trees: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """`in segment NAME` answered from `trees`."""

    def resolve(name: str) -> dict[str, Any]:
        if name not in trees:
            raise _unknown(name)
        return trees[name]

    return resolve


def _saved(row: Any) -> SavedSegment:
    # (the member count kept with every entry and exit: no walk of the members)
    return SavedSegment(
        row.name,
        row.condition,
        row.tree,
        int(row.members),
        row.created_at,
        row.updated_at,
        row.refreshed_at,
    )


def list_segments(engine: Engine) -> list[SavedSegment]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(segments).order_by(segments.c.name)).all()
    return [_saved(r) for r in rows]


def get_segment(engine: Engine, name: str) -> SavedSegment:
    with engine.connect() as conn:
        row = conn.execute(sa.select(segments).where(segments.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"no segment `{name[:64]}`: see `GET /v1/segments`")
    return _saved(row)


def save_segment(
    engine: Engine, settings: Settings, name: str, tree: dict[str, Any], *, create: bool
) -> SavedSegment:
    """Create (or, with `create=False`, replace) a segment; its members follow at once."""
    _check_name(name)
    validate_tree(tree)
    now = clock.now()
    with begin_write(engine) as conn:
        # Compiling checks the segments it refers to exist and do not refer back to it.
        def resolve(other: str) -> dict[str, Any]:
            return tree if other == name else tree_of(conn, other)

        compile_condition(
            {"segment": name}, conn.dialect.name, now=now, mood=settings.mood, segment=resolve
        )
        exists = conn.execute(sa.select(segments.c.name).where(segments.c.name == name)).first()
        values = {"condition": to_text(tree), "tree": tree, "updated_at": now}
        if create:
            if exists:
                raise ConflictError(f"segment `{name}` exists already: change it with PUT")
            count = conn.execute(sa.select(sa.func.count()).select_from(segments)).scalar_one()
            if count >= _MAX_SEGMENTS:
                raise ConflictError(f"at most {_MAX_SEGMENTS} segments")
            conn.execute(segments.insert().values(name=name, created_at=now, **values))
        else:
            if not exists:
                raise NotFoundError(f"no segment `{name}`: create it with POST /v1/segments")
            conn.execute(segments.update().where(segments.c.name == name).values(**values))
    refresh(engine, settings, now=now, names=[name], reason=f"segment `{name}` saved")
    return get_segment(engine, name)


def delete_segment(engine: Engine, name: str) -> None:
    """Delete a segment: its members exit (recorded), other segments must not refer to it."""
    now = clock.now()
    with begin_write(engine) as conn:
        if conn.execute(sa.select(segments.c.name).where(segments.c.name == name)).first() is None:
            raise NotFoundError(f"no segment `{name[:64]}`")
        for other, tree in saved_trees(conn).items():
            if other != name and name in references(tree):
                raise ConflictError(f"segment `{other}` refers to `{name}`: change it first")
        members = (
            conn.execute(
                sa.select(segment_members.c.profile_id).where(segment_members.c.segment == name)
            )
            .scalars()
            .all()
        )
        if members:
            conn.execute(
                segment_changes.insert(),
                [
                    {
                        "segment": name,
                        "profile_id": p,
                        "change": "exited",
                        "at": now,
                        "reason": "segment deleted",
                    }
                    for p in members
                ],
            )
        conn.execute(segment_members.delete().where(segment_members.c.segment == name))
        conn.execute(segments.delete().where(segments.c.name == name))


def refresh(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    names: list[str] | None = None,
    reason: str | None = None,
    incremental: bool = False,
) -> RefreshReport:
    """Evaluate segments as of `now` and record who entered and who exited.

    With `incremental`, only profiles the processor wrote since the segment's last refresh
    are evaluated (their `processed_seq` is newer): the cost follows the new events, not the
    number of profiles. Time windows and fading mood change membership without events, so a
    full refresh runs on a schedule too.

    Segments are evaluated in read transactions (no lock held while a query runs), then their
    members are updated in short write transactions that first lock the segments' rows and
    read the stored members again, so concurrent refreshers (server and workers) and the
    writers of the event log never wait on an evaluation: a whole segment in a transaction of
    its own; the written profiles of every incrementally refreshed segment in one. (On
    SQLite, the conditions the write log's numbers answer are evaluated in the pass that
    reads the stored members: no profile row read, ADR 0015.)
    """
    # Sets and rows of member ids: many small acyclic objects (see `cyclic_gc_paused`).
    with cyclic_gc_paused():
        return _refresh(
            engine, settings, now=now or clock.now(), names=names, reason=reason,
            incremental=incremental,
        )  # fmt: skip


def _refresh(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime,
    names: list[str] | None,
    reason: str | None,
    incremental: bool,
) -> RefreshReport:
    with engine.connect() as conn:
        seq = processor_seq(conn)
        stmt = sa.select(
            segments.c.name,
            segments.c.tree,
            segments.c.condition,
            segments.c.refreshed_seq,
            segments.c.members,
        )
        if names is not None:
            stmt = stmt.where(segments.c.name.in_(names))
        found = conn.execute(stmt.order_by(segments.c.name)).all()
        saved_tree = resolver(saved_trees(conn))
    # Incremental: the profiles the processor wrote after each segment's last refresh and up
    # to `seq` (a later batch's profiles wait for the next refresh, which starts from `seq`).
    since = {
        row.name: row.refreshed_seq
        for row in found
        if incremental and row.refreshed_seq is not None and row.refreshed_seq <= seq
    }
    evaluation = _Evaluation(settings, seq, now, saved_tree)
    currents, numbered = _evaluate_written(
        engine, [(r.name, r.tree) for r in found if r.name in since], since, evaluation
    )
    touched: dict[int, dict[str, ProfileFacts]] = {}
    for name, tree in ((r.name, r.tree) for r in found):
        if name in currents or name in numbered or name not in since:
            continue
        # A condition on the log: load the few profiles' facts once and use the reference
        # evaluator (the same semantics as the SQL, checked by the property tests), not a scan
        # of events.
        if since[name] not in touched:
            with engine.connect() as conn:
                which = _written(since[name], seq)
                touched[since[name]] = load_facts(conn, which)
        currents[name] = {
            pid
            for pid, facts in touched[since[name]].items()
            if evaluate(tree, facts, now=now, mood=settings.mood, segment=saved_tree)
        }
    entered = exited = 0
    why = {r.name: reason or r.condition for r in found}
    if currents or numbered:
        with begin_write(engine, derived=True) as conn:
            counts = _lock(conn, sorted(currents.keys() | numbered.keys()), now=now, seq=seq)
            stored, written, evaluated = _stored_written(
                conn, counts, since, seq=seq, numbered=numbered, evaluation=evaluation
            )
            currents.update(evaluated)
            change = _Changes(conn, now)
            for name in sorted(stored):  # (a segment deleted meanwhile is left out)
                current = currents[name] & written[name]
                joined, left = change.add(
                    name, current, stored[name], why=why[name], before=counts[name]
                )
                entered, exited = entered + joined, exited + left
            change.write()
            prune_writes(conn)
    sizes = {r.name: int(r.members) for r in found}
    for group in _groups([(r.name, r.tree) for r in found if r.name not in since], sizes):
        full: dict[str, set[str]] = {}
        for name, tree in group:
            with engine.connect() as conn:
                where = condition_where(conn, settings, tree, now, segment=saved_tree)
                full[name] = set(conn.execute(sa.select(profiles.c.id).where(where)).scalars())
        with begin_write(engine, derived=True) as conn:
            counts = _lock(conn, sorted(full), now=now, seq=seq)
            every = _members_of(conn, sorted(counts))
            change = _Changes(conn, now)
            for name in sorted(counts):  # (a segment deleted meanwhile is left out)
                current = full[name]
                joined, left = change.add(
                    name, current, every[name], why=why[name],
                    before=counts[name], exact=len(current),
                )  # fmt: skip
                entered, exited = entered + joined, exited + left
            change.write()
    if not incremental:  # once a full pass (with no segment at all, up to the processor)
        with begin_write(engine, derived=True) as conn:
            prune_writes(conn)
        index_history(engine, after=0)  # (SQLite: the history's profiles, ADR 0016)
    return RefreshReport(len(found), entered, exited)


# A full refresh evaluates segments in groups and reads the stored members of a group in one
# walk of the members' key (SQLite, migration 0020); a group holds up to this many segments and
# kept members (the sets of its members and of its current ones are in memory at once).
_GROUP_SEGMENTS = 50
_GROUP_MEMBERS = 2_000_000


def _groups(
    found: list[tuple[str, dict[str, Any]]], sizes: dict[str, int]
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    group: list[tuple[str, dict[str, Any]]] = []
    held = 0
    for name, tree in found:
        if group and (len(group) >= _GROUP_SEGMENTS or held + sizes[name] > _GROUP_MEMBERS):
            yield group
            group, held = [], 0
        group.append((name, tree))
        held += sizes[name]
    if group:
        yield group


def _members_of(conn: sa.Connection, names: list[str]) -> dict[str, set[str]]:
    """The stored members of segments `names`: on SQLite one walk of the members' key for all
    of them (in profile order, the rows of other segments skipped); on PostgreSQL ranges of
    its index by segment."""
    every: dict[str, set[str]] = {name: set() for name in names}
    if not names:
        return every
    m = segment_members.c
    for name, pid in conn.execute(sa.select(m.segment, m.profile_id).where(m.segment.in_(names))):
        every[name].add(pid)
    return every


def processor_seq(conn: sa.Connection) -> int:
    """The processor's last batch (`seq` of its cursor row; other cursors share the table:
    the survey engine's, whose `seq` stays 0)."""
    query = sa.select(processor_cursors.c.seq).where(processor_cursors.c.name == MAIN_CURSOR)
    return int(conn.execute(query).scalar() or 0)


def _lock(conn: sa.Connection, names: list[str], *, now: datetime, seq: int) -> dict[str, int]:
    """Mark the segments refreshed as of `now` and the processor's batch `seq` (which locks
    their rows); the member counts of those that still exist."""
    conn.execute(
        segments.update()
        .where(segments.c.name.in_(names))
        .values(refreshed_at=now, refreshed_seq=seq)
    )
    query = sa.select(segments.c.name, segments.c.members).where(segments.c.name.in_(names))
    return {name: int(members) for name, members in conn.execute(query)}


def _stored_written(
    conn: sa.Connection,
    counts: dict[str, int],
    since: dict[str, int],
    *,
    seq: int,
    numbered: dict[str, dict[str, Any]],
    evaluation: _Evaluation,
) -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """For each (locked) segment of `counts`: the profiles written since its last refresh and
    up to batch `seq` that still are (merged ones too: they leave, written and not live), and
    its stored members among them, read at once through the members' profile index; and the
    members among them of the segments `numbered` (`answered_by_numbers`), evaluated in the
    same pass on the numbers each profile's latest row of the log carries.

    A profile written again by a later batch meanwhile is still among them (its row of that
    batch too), and the next refresh (which starts from `seq`) evaluates it again."""
    stored: dict[str, set[str]] = {name: set() for name in counts}
    written: dict[str, set[str]] = {}
    currents: dict[str, set[str]] = {}
    numbered = {name: tree for name, tree in numbered.items() if name in counts}
    # (read again under the lock; only the numbered segments compile with it here)
    basis = usable_basis(conn, evaluation.settings.mood, evaluation.now) if numbered else None
    if numbered and not numbers_usable(conn, evaluation.settings, evaluation.now, basis=basis):
        # (the mood basis was rebuilt meanwhile: the profiles' rows, in this transaction)
        for since_seq, group in _by_since(sorted(numbered.items()), since).items():
            currents.update(
                evaluation.members(conn, written_members_query, group, since_seq, basis)
            )
        numbered = {}
    for since_seq in sorted({since[name] for name in stored}):
        wanted = {name for name in stored if since[name] == since_seq}
        group = [(name, numbered[name]) for name in sorted(wanted) if name in numbered]
        first, rest = group[:_COLUMNS], group[_COLUMNS:]
        columns = numbers_columns(
            conn, evaluation.settings, [tree for _name, tree in first], evaluation.now,
            evaluation.saved_tree, basis=basis,
        )  # fmt: skip
        rows = conn.execute(written_memberships(since_seq, seq, columns)).all()
        for pid, segment, *_ in rows:
            if segment in wanted:
                stored[segment].add(pid)
        latest = latest_rows(rows)
        for n, (name, _tree) in enumerate(first, start=2):
            currents[name] = {pid for pid, row in latest.items() if row[n]}
        currents.update(evaluation.members(conn, written_numbers_query, rest, since_seq, basis))
        found = set(latest)  # (read, never changed: one set for all of them)
        written.update(dict.fromkeys(wanted, found))
    return stored, written, currents


def written_memberships(
    since_seq: int, seq: int, columns: Sequence[ColumnElement[Any]] = ()
) -> sa.Select[Any]:
    """Each row of `profile_writes` after batch `since_seq` up to `seq` (a range of its key),
    in batch order, with each segment its profile is a member of (through the members'
    profile index) or NULL, and `columns` (conditions on the row's numbers): one pass. (A
    profile erased since is no member of any segment.)"""
    joined = profile_writes.outerjoin(
        segment_members, segment_members.c.profile_id == profile_writes.c.profile_id
    )
    query = (
        sa.select(profile_writes.c.profile_id, segment_members.c.segment, *columns)
        .select_from(joined)
        .where(_logged(since_seq, seq))
    )
    # (SQLite: the order of the log's key, no sort; the memberships alone need none)
    return query.order_by(profile_writes.c.seq) if columns else query


_INSERT_MEMBER = "INSERT INTO segment_members (segment, profile_id, entered_at) VALUES (?, ?, ?)"
_DELETE_MEMBER = "DELETE FROM segment_members WHERE segment = ? AND profile_id = ?"
_INSERT_CHANGE = (
    "INSERT INTO segment_changes (segment, profile_id, change, at, reason) VALUES (?, ?, ?, ?, ?)"
)


class _Changes:
    """The entries and exits of one write transaction, for every segment it refreshes,
    written at once (`write`): each table's rows in one driver `executemany`, as plain
    tuples (SQLAlchemy prepared each row's parameters), in profile order, so a profile that
    enters two segments (a detractor turning negative) has its rows of the profile indexes
    on the same pages, and an exit is one probe of the key, not a chunk of an IN list."""

    def __init__(self, conn: sa.Connection, now: datetime) -> None:
        self.conn, self.now = conn, now
        self.pg = conn.dialect.name == "postgresql"
        self.at = driver_time(now, pg=self.pg)
        self.joined: dict[str, list[str]] = {}  # sorted ids by segment
        self.left: dict[str, list[str]] = {}
        self.sizes: dict[str, int] = {}
        self.why: dict[str, str] = {}

    def add(
        self,
        name: str,
        current: set[str],
        stored: set[str],
        *,
        why: str,
        before: int,
        exact: int | None = None,
    ) -> tuple[int, int]:
        """Who entered segment `name` (in `current`, not `stored`) and who exited, and its
        size after: `exact` where known (a whole segment evaluated), else its kept count
        `before` plus and minus them; how many entered and exited."""
        joined, left = sorted(current - stored), sorted(stored - current)
        if joined:
            self.joined[name] = joined
        if left:
            self.left[name] = left
        size = before + len(joined) - len(left) if exact is None else exact
        if size != before or joined or left:
            self.sizes[name] = size
        if joined or left:
            self.why[name] = why
        return len(joined), len(left)

    def write(self) -> None:
        conn, pg, at, why = self.conn, self.pg, self.at, self.why
        joined, left = _by_profile(self.joined, "entered"), _by_profile(self.left, "exited")
        if joined:
            conn.exec_driver_sql(
                native_sql(_INSERT_MEMBER, pg=pg), [(name, p, at) for p, name, _ in joined]
            )
        if left:
            conn.exec_driver_sql(
                native_sql(_DELETE_MEMBER, pg=pg), [(name, p) for p, name, _ in left]
            )
        history = list(heapq.merge(joined, left))
        if history:
            conn.exec_driver_sql(
                native_sql(_INSERT_CHANGE, pg=pg),
                [(name, p, change, at, why[name]) for p, name, change in history],
            )
        for name, size in sorted(self.sizes.items()):
            conn.execute(segments.update().where(segments.c.name == name).values(members=size))
            if name in why:
                # (a second refresh as of the same time replaces its size)
                conn.execute(
                    segment_sizes.delete().where(
                        segment_sizes.c.segment == name, segment_sizes.c.at == self.now
                    )
                )
                conn.execute(segment_sizes.insert().values(segment=name, at=self.now, size=size))


def _by_profile(ids: dict[str, list[str]], change: str) -> list[tuple[str, str, str]]:
    """`(profile, segment, change)` for each segment's sorted ids, in profile order (a merge
    of the sorted lists: a sort of the tuples took 2.5 times as long for 300,000 ids)."""
    return list(heapq.merge(*([(p, name, change) for p in each] for name, each in ids.items())))


def forget_members(conn: sa.Connection, profile_ids: list[str]) -> int:
    """In `conn`'s transaction: take these profiles out of every segment without recording
    it (erasure: no trace of them stays), keeping the segments' member counts; rows deleted."""
    deleted = 0
    for chunk in _chunks(sorted(profile_ids)):
        mine = segment_members.c.profile_id.in_(chunk)
        counted = sa.select(segment_members.c.segment, sa.func.count()).where(mine)
        for name, count in conn.execute(counted.group_by(segment_members.c.segment)).all():
            conn.execute(
                segments.update()
                .where(segments.c.name == name)
                .values(members=segments.c.members - count)
            )
        deleted += conn.execute(segment_members.delete().where(mine)).rowcount
    return deleted


def _logged(since_seq: int, seq: int) -> ColumnElement[bool]:
    """The rows of `profile_writes` (migration 0019) of the batches after `since_seq` up to
    `seq`: one range of its key."""
    return sa.and_(profile_writes.c.seq > since_seq, profile_writes.c.seq <= seq)


def _written(since_seq: int, seq: int) -> ColumnElement[bool]:
    """The profiles (merged ones too) the processor wrote after batch `since_seq` and up to
    batch `seq`: a range of the log, each id then read by the primary key."""
    return profiles.c.id.in_(sa.select(profile_writes.c.profile_id).where(_logged(since_seq, seq)))


def prune_writes(conn: sa.Connection) -> int:
    """In `conn`'s transaction: forget the profile writes every segment has been refreshed
    past (none while a segment waits for its first, full, refresh); rows deleted."""
    oldest = sa.select(sa.func.min(segments.c.refreshed_seq)).scalar_subquery()
    waiting = sa.exists().where(segments.c.refreshed_seq.is_(None))
    found = conn.execute(sa.select(oldest, waiting)).one()
    if found[1]:
        return 0
    # (no segment: nobody reads them)
    bound = processor_seq(conn) if found[0] is None else int(found[0])
    return conn.execute(profile_writes.delete().where(profile_writes.c.seq <= bound)).rowcount


def _chunks(ids: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


_COLUMNS = 50  # conditions per query
# The default of `basis` below: read the mood basis (`usable_basis`, two queries). A refresh
# reads it once per transaction and hands it to each condition it compiles there.
_READ_BASIS: Any = object()


def _resolved(
    conn: sa.Connection, settings: Settings, now: datetime, basis: MoodBasis | None
) -> MoodBasis | None:
    """`basis` as handed in, or the `usable_basis` read now for `_READ_BASIS`."""
    return usable_basis(conn, settings.mood, now) if basis is _READ_BASIS else basis


@dataclass(frozen=True)
class _Evaluation:
    """What the conditions of a refresh are compiled with."""

    settings: Settings
    seq: int
    now: datetime
    saved_tree: Callable[[str], dict[str, Any]]

    def members(
        self,
        conn: sa.Connection,
        query_of: Callable[..., sa.Select[Any]],
        group: list[tuple[str, dict[str, Any]]],
        since_seq: int,
        basis: MoodBasis | None,
    ) -> dict[str, set[str]]:
        """The members of each segment of `group` among the profiles written after batch
        `since_seq`, by `written_members_query` or `written_numbers_query`: each condition a
        column, so each written profile is read once."""
        out: dict[str, set[str]] = {}
        for part in (group[n : n + _COLUMNS] for n in range(0, len(group), _COLUMNS)):
            trees = [tree for _name, tree in part]
            query = query_of(
                conn, self.settings, trees, since_seq, self.seq, self.now, self.saved_tree,
                basis=basis,
            )  # fmt: skip
            latest = latest_rows(conn.execute(query).all())
            for n, (name, _tree) in enumerate(part, start=1):
                out[name] = {pid for pid, row in latest.items() if row[n]}
        return out


def _by_since(
    named: Iterable[tuple[str, dict[str, Any]]], since: dict[str, int]
) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """The segments grouped by the batch their incremental refresh starts after."""
    groups: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for name, tree in named:
        groups.setdefault(since[name], []).append((name, tree))
    return groups


def _evaluate_written(
    engine: Engine,
    named: list[tuple[str, dict[str, Any]]],
    since: dict[str, int],
    evaluation: _Evaluation,
) -> tuple[dict[str, set[str]], dict[str, dict[str, Any]]]:
    """The members among the profiles written since each segment's last refresh, for the
    segments whose conditions read neither the log nor only the numbers it carries: one
    query for all segments with the same starting batch. The segments answered by the
    numbers (on SQLite, with a usable mood basis) come back to be evaluated with the stored
    members, in one pass of the log (`_stored_written`)."""
    out: dict[str, set[str]] = {}
    numbered: dict[str, dict[str, Any]] = {}
    on_rows: list[tuple[str, dict[str, Any]]] = []
    saved_tree = evaluation.saved_tree
    with engine.connect() as conn:
        basis = usable_basis(conn, evaluation.settings.mood, evaluation.now)
        numbers = numbers_usable(conn, evaluation.settings, evaluation.now, basis=basis)
        for name, tree in named:
            if reads_log(tree, segment=saved_tree):
                continue
            if numbers and answered_by_numbers(tree, segment=saved_tree):
                numbered[name] = tree
            else:
                on_rows.append((name, tree))
        for since_seq, group in _by_since(on_rows, since).items():
            out.update(evaluation.members(conn, written_members_query, group, since_seq, basis))
    return out, numbered


# Conditions the numbers a `profile_writes` row carries answer (with a usable mood basis):
# mood and churn risk from the mood index numbers, the latest NPS answer.
_NUMBER_NODES = frozenset(("mood", "churn_risk", "latest_nps"))


def answered_by_numbers(tree: dict[str, Any], *, segment: Callable[[str], dict[str, Any]]) -> bool:
    """Whether the tree compares only what a `profile_writes` row carries."""
    ((kind, value),) = tree.items()
    if kind in ("and", "or"):
        return all(answered_by_numbers(child, segment=segment) for child in value)
    if kind == "not":
        return answered_by_numbers(value, segment=segment)
    if kind == "segment":
        return answered_by_numbers(segment(value), segment=segment)
    return kind in _NUMBER_NODES


def numbers_usable(
    conn: sa.Connection,
    settings: Settings,
    now: datetime,
    *,
    basis: MoodBasis | None = _READ_BASIS,
) -> bool:
    """SQLite, and mood conditions compile to the index numbers alone (a usable basis, and
    no signal after `now`, which would need the signals themselves); `basis`: the
    `usable_basis` where the caller read it."""
    if conn.dialect.name != "sqlite":
        return False  # (PostgreSQL compiles to its generated columns, read from the rows)
    basis = _resolved(conn, settings, now, basis)
    return basis is not None and (basis.latest_us is None or basis.latest_us <= to_epoch_us(now))


def written_numbers_query(
    conn: sa.Connection,
    settings: Settings,
    trees: list[dict[str, Any]],
    since_seq: int,
    seq: int,
    now: datetime,
    saved_tree: Callable[[str], dict[str, Any]],
    *,
    basis: MoodBasis | None = _READ_BASIS,
) -> sa.Select[Any]:
    """SQLite: each row of `profile_writes` after batch `since_seq` up to `seq`, in batch
    order, with one column per condition (each `answered_by_numbers`), evaluated on the
    numbers the row carries, as written with the profile: one range of the log, no profile
    row read. A profile written by several batches comes once for each, and its last row
    counts (`latest_rows`): cheaper than a GROUP BY, which sorted the range."""
    columns = numbers_columns(conn, settings, trees, now, saved_tree, basis=basis)
    query = sa.select(profile_writes.c.profile_id, *columns).where(_logged(since_seq, seq))
    return query.order_by(profile_writes.c.seq)


def numbers_columns(
    conn: sa.Connection,
    settings: Settings,
    trees: list[dict[str, Any]],
    now: datetime,
    saved_tree: Callable[[str], dict[str, Any]],
    *,
    basis: MoodBasis | None = _READ_BASIS,
) -> list[ColumnElement[Any]]:
    """Each condition (`answered_by_numbers`) on the numbers of a `profile_writes` row."""
    log = profile_writes
    basis = _resolved(conn, settings, now, basis)

    def on_log(element: Any, **_kw: Any) -> Any:
        """A profile's column, or a number of its `derived` document, as the log's column
        (a KeyError for anything else: not a condition `answered_by_numbers`)."""
        if isinstance(element, sa.Column) and element.table is profiles:
            return log.c.profile_id if element.name == "id" else log.c[element.name]
        if isinstance(element, FunctionElement) and element.name == "json_extract":
            document, path = element.clauses
            if document is profiles.c.derived:
                return log.c[WRITTEN_NUMBERS[str(path).strip("'")]]
        return None

    return [
        sa.func.coalesce(
            replacement_traverse(
                condition_where(conn, settings, tree, now, segment=saved_tree, basis=basis),
                {},
                on_log,
            ),
            False,
        )
        for tree in trees
    ]


def latest_rows(rows: Iterable[Sequence[Any]]) -> dict[str, Sequence[Any]]:
    """The last of the rows of each profile (the first column), by profile, from rows in
    batch order."""
    return {row[0]: row for row in rows}


def written_members_query(
    conn: sa.Connection,
    settings: Settings,
    trees: list[dict[str, Any]],
    since_seq: int,
    seq: int,
    now: datetime,
    saved_tree: Callable[[str], dict[str, Any]],
    *,
    basis: MoodBasis | None = _READ_BASIS,
) -> sa.Select[Any]:
    """Each profile written after batch `since_seq` up to `seq`, with one column per condition
    (whether it holds), read from the profiles' rows."""
    basis = _resolved(conn, settings, now, basis)
    columns = [
        sa.func.coalesce(
            condition_where(conn, settings, tree, now, segment=saved_tree, basis=basis), False
        )
        for tree in trees
    ]
    written = _written(since_seq, seq)
    return sa.select(profiles.c.id, *columns).where(written)


def load_facts(conn: sa.Connection, which: ColumnElement[bool]) -> dict[str, ProfileFacts]:
    """The live profiles `which` selects, with their events, for the reference evaluator:
    events found through the log's user-id and anonymous-id indexes, attributed as the
    processor applied them (the user id, else the anonymous id, unless it recorded the event
    for another profile in `event_attributions`), and the events it recorded for them."""
    facts: dict[str, ProfileFacts] = {
        r.id: ProfileFacts(traits=r.traits, consent=r.consent, derived=r.derived)
        for r in conn.execute(
            sa.select(
                profiles.c.id, profiles.c.traits, profiles.c.consent, profiles.c.derived
            ).where(which, profiles.c.merged_into.is_(None))
        )
    }
    ids = sorted(facts)
    owner: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        for key, pid in conn.execute(
            sa.select(identities.c.key, identities.c.profile_id).where(
                identities.c.profile_id.in_(ids[start : start + 500])
            )
        ):
            owner[key] = pid
    users = sorted(k[2:] for k in owner if k.startswith("u:"))
    anonymous = sorted(k[2:] for k in owner if k.startswith("a:"))
    columns = (events.c.id, events.c.type, events.c.event, events.c.timestamp, events.c.payload)
    attributed = event_attributions.c
    recorded = sa.exists().where(attributed.event_id == events.c.id)
    for values, column, prefix, extra in (
        (users, events.c.user_id, "u:", None),
        (anonymous, events.c.anonymous_id, "a:", sa.and_(events.c.user_id.is_(None), ~recorded)),
    ):
        for start in range(0, len(values), 500):
            stmt = sa.select(*columns, column.label("by")).where(
                column.in_(values[start : start + 500])
            )
            if extra is not None:
                stmt = stmt.where(extra)
            for row in conn.execute(stmt).mappings():
                pid = owner.get(prefix + row["by"])
                if pid is not None:
                    event = dict(row)
                    del event["by"]
                    facts[pid].events.append(event)
    for start in range(0, len(ids), 500):
        stmt = (
            sa.select(*columns, attributed.profile_id)
            .join(event_attributions, attributed.event_id == events.c.id)
            .where(attributed.profile_id.in_(ids[start : start + 500]))
        )
        for row in conn.execute(stmt).mappings():
            event = dict(row)
            facts[event.pop("profile_id")].events.append(event)
    return facts


def stored_members(
    engine: Engine, name: str, *, after: str | None, limit: int
) -> list[dict[str, Any]]:
    get_segment(engine, name)
    stmt = (
        sa.select(
            segment_members.c.profile_id, segment_members.c.entered_at, profiles.c.customer_key
        )
        .join(profiles, profiles.c.id == segment_members.c.profile_id)
        .where(segment_members.c.segment == name)
    )
    if after:
        stmt = stmt.where(segment_members.c.profile_id > after)
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(segment_members.c.profile_id).limit(limit)).all()
    return [
        {"id": r.profile_id, "customer_key": r.customer_key, "entered_at": r.entered_at.isoformat()}
        for r in rows
    ]


def sizes(engine: Engine, name: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The segment's size after each change, oldest first (the newest `limit`)."""
    get_segment(engine, name)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(segment_sizes.c.at, segment_sizes.c.size)
            .where(segment_sizes.c.segment == name)
            .order_by(segment_sizes.c.at.desc())
            .limit(limit)
        ).all()
    return [{"at": r.at.isoformat(), "size": r.size} for r in reversed(rows)]


def changes(
    engine: Engine, name: str, *, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    get_segment(engine, name)
    stmt = sa.select(segment_changes).where(segment_changes.c.segment == name)
    if before_id is not None:
        stmt = stmt.where(segment_changes.c.id < before_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(segment_changes.c.id.desc()).limit(limit)).all()
    return [
        {
            "id": r.id,
            "profile_id": r.profile_id,
            "change": r.change,
            "at": r.at.isoformat(),
            "reason": r.reason,
        }
        for r in rows
    ]


def condition_where(
    conn: sa.Connection,
    settings: Settings,
    tree: dict[str, Any],
    now: datetime,
    *,
    segment: Callable[[str], dict[str, Any]] | None = None,
    basis: MoodBasis | None = _READ_BASIS,
) -> ColumnElement[bool]:
    """The SQL condition selecting the live (not merged) profiles `tree` selects as of `now`;
    mood conditions read the mood index when its basis is usable (`basis`: the caller's
    `usable_basis`, read once for several conditions in one transaction)."""
    basis = _resolved(conn, settings, now, basis)
    return sa.and_(
        profiles.c.merged_into.is_(None),
        compile_condition(
            tree,
            conn.dialect.name,
            now=now,
            mood=settings.mood,
            segment=segment or (lambda name: tree_of(conn, name)),
            opt_out=settings.profiles.opt_out_purposes(),
            basis=basis,
            indexed_traits=frozenset(settings.segments.indexed_traits),
        ),
    )


def count_moods(conn: sa.Connection, settings: Settings, now: datetime) -> dict[str, int]:
    """Customers by mood label as of `now`: two ranges of the mood index and the total, or
    without a usable index one pass over the profiles."""

    def count(where: Any) -> int:
        query = sa.select(sa.func.count()).select_from(profiles).where(where)
        return int(conn.execute(query).scalar_one())

    basis = usable_basis(conn, settings.mood, now)
    if basis is not None:
        positive = count(condition_where(conn, settings, {"mood": "positive"}, now, basis=basis))
        negative = count(condition_where(conn, settings, {"mood": "negative"}, now, basis=basis))
        live = count(profiles.c.merged_into.is_(None))
        return {"positive": positive, "neutral": live - positive - negative, "negative": negative}
    score = mood_score(conn.dialect.name, now=now, mood=settings.mood).label("score")
    scores = sa.select(score).where(profiles.c.merged_into.is_(None)).subquery()
    high = settings.mood.positive_threshold
    low = settings.mood.negative_threshold

    def total(condition: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    row = conn.execute(
        sa.select(
            total(scores.c.score >= high),
            total(sa.and_(scores.c.score > low, scores.c.score < high)),
            total(scores.c.score <= low),
        )
    ).one()
    return {"positive": int(row[0]), "neutral": int(row[1]), "negative": int(row[2])}


def record_moods(engine: Engine, settings: Settings, now: datetime) -> dict[str, int]:
    """Count customers by mood and keep the counts (done by every full refresh)."""
    with engine.connect() as conn:
        counts = count_moods(conn, settings, now)
    with begin_write(engine) as conn:
        conn.execute(mood_sizes.delete().where(mood_sizes.c.at == now))
        conn.execute(mood_sizes.insert().values(at=now, **counts))
    return counts


def latest_moods(engine: Engine) -> tuple[datetime, dict[str, int]] | None:
    """The newest mood counts and when they were made, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(mood_sizes).order_by(mood_sizes.c.at.desc()).limit(1)).first()
    if row is None:
        return None
    return row.at, {"positive": row.positive, "neutral": row.neutral, "negative": row.negative}


def index_history(engine: Engine, *, after: int = INDEX_AFTER) -> int:
    """Put the changes past the history's mark into its batched index, in batches, when more
    than `after` wait (SQLite; `segments.history`); how many went in."""
    with engine.connect() as conn:
        if unindexed(conn) <= after:
            return 0
    total = 0
    while True:  # (a batch a transaction: the writers of the event log wait less)
        with begin_write(engine, derived=True) as conn:
            total += index_changes(conn)
            if unindexed(conn) == 0:
                return total


class SegmentRefresher:
    """Keeps membership current inside `closedloop serve` and `closedloop worker`: a refresh
    soon after the processor applied events (its cursor moved) and one on a schedule."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="closedloop-segments", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _cursor(self) -> Any:
        with self._engine.connect() as conn:
            return processor_seq(conn)

    def _loop(self) -> None:
        config = self._settings.segments
        seen = None
        last = 0.0
        while not self._stop.wait(min(config.refresh_after_events_seconds, 1.0)):
            try:
                cursor = self._cursor()
                due = time.monotonic() - last >= config.refresh_seconds
                if due:
                    ensure_basis(self._engine, self._settings)
                    ensure_trait_indexes(self._engine, self._settings)
                    refresh(self._engine, self._settings)
                    record_moods(self._engine, self._settings, clock.now())
                    seen, last = cursor, time.monotonic()
                elif cursor != seen:
                    refresh(self._engine, self._settings, incremental=True)
                    seen = cursor
                    index_history(self._engine)
            except Exception:  # noqa: BLE001 - keep refreshing; the next pass retries
                _log.exception("segments: refresh failed; retrying")

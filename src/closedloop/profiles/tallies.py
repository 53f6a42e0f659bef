"""Event tallies: per live profile and track event name, how many and the newest times.

`did "Product Viewed" at least 2 times within 365 days` asks, per profile, whether the
second-newest such event lies within the window. Counted from the log that is a join of
every matching event with its identity and a group by profile (17 s for 10M events); a row
per profile and event name holding the count and the newest `RECENT` times answers it from
one index range (ADR 0009). Besides the row for all events of a name (facet `""`), each
value of a `TALLIED_PROPERTIES` property has a row of its own (facet `category=s:Laufschuhe`),
for `did "Product Viewed" with category = "Laufschuhe" ...`.

The processor keeps the rows in the batch's transaction: the events it applied, added under
the profile they went to; a merge moves the merged profile's rows onto the survivor. Both
are sums of counts and unions of times, so the order of events and merges within a batch
does not matter, and a rebuild writes the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from closedloop.store import fetch_all

__all__ = [
    "KEEP_PROFILES",
    "MAX_TEXT",
    "RECENT",
    "TALLIED_PROPERTIES",
    "Known",
    "TallyWriter",
    "facet",
    "facets",
    "newest",
]

# How many of the newest times a row keeps: `at least N times within D days` is answered
# from the tallies for N up to this, from the log above it.
RECENT = 10
# Properties whose values get rows of their own (Segment's e-commerce events carry the
# product's `category`).
TALLIED_PROPERTIES = ("category",)
# Longer event names and text values are not tallied (conditions on them read the log).
MAX_TEXT = 200

_CHUNK = 500
# Profiles whose rows a processor keeps between batches (`TallyWriter.statements`' `known`).
KEEP_PROFILES = 20_000
# Every row of a profile: (event name, facet) -> (total, newest times).
Known = dict[str, dict[tuple[str, str], tuple[int, list[int]]]]

_LOAD = (
    "SELECT profile_id, event, facet, total, recent::t FROM event_tallies WHERE profile_id IN (?*)"
)
_UPSERT = (
    "INSERT INTO event_tallies (profile_id, event, facet, total, recent) "
    "VALUES (?, ?, ?, ?, ?j) ON CONFLICT (profile_id, event, facet) "
    "DO UPDATE SET total = excluded.total, recent = excluded.recent"
)
_DELETE = "DELETE FROM event_tallies WHERE profile_id IN (?*)"


def newest(times: Iterable[int]) -> list[int]:
    """The newest `RECENT` of `times`, newest first (equal times each count)."""
    return sorted(times, reverse=True)[:RECENT]


def facet(name: str, value: Any) -> str | None:
    """The facet of a property value, typed as segment conditions compare: text, number
    (5 and 5.0 are one) and true/false stay apart; None for what is not tallied (lists,
    objects, null, long text)."""
    if isinstance(value, bool):
        return f"{name}=b:{'true' if value else 'false'}"
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            return None
        return f"{name}=n:{0.0 if number == 0 else number!r}"
    if isinstance(value, str) and len(value) <= MAX_TEXT:
        return f"{name}=s:{value}"
    return None


def facets(payload: dict[str, Any]) -> list[str]:
    """The rows a track event counts in besides its name's: one per tallied property."""
    properties = payload.get("properties")
    if properties.__class__ is not dict:
        return []
    found = []
    for name in TALLIED_PROPERTIES:
        if name in properties and (f := facet(name, properties[name])) is not None:
            found.append(f)
    return found


class TallyWriter:
    """Builds the writes of one batch's tallies; `native` turns the statements above into
    the driver's SQL (`?` or `%s`, `::t` and `?j` casts) and `in_list` widens `?*` to n
    placeholders."""

    def __init__(self, native: Callable[[str], str], in_list: Callable[[str, int], str]) -> None:
        self.load = native(_LOAD)
        self.upsert = native(_UPSERT)
        self.delete = native(_DELETE)
        self.in_list = in_list

    def _rows(
        self, conn: sa.Connection, pids: list[str]
    ) -> Iterable[tuple[str, str, str, int, list[int]]]:
        for start in range(0, len(pids), _CHUNK):
            chunk = pids[start : start + _CHUNK]
            statement = self.in_list(self.load, len(chunk))
            for pid, name, kind, total, recent in fetch_all(conn, statement, tuple(chunk)):
                yield pid, name, kind, total, orjson.loads(recent)

    def _complete(self, conn: sa.Connection, pids: list[str], known: Known) -> None:
        """Make `known` hold every stored row of `pids`: those it lacks read from the store."""
        missing = [pid for pid in pids if pid not in known]
        for pid in missing:
            known[pid] = {}
        for pid, name, kind, total, recent in self._rows(conn, missing):
            known[pid][(name, kind)] = (total, recent)

    def statements(
        self,
        conn: sa.Connection,
        added: dict[tuple[str, str, str], list[int]],
        moves: list[tuple[str, str]],
        final: Callable[[str], str],
        known: Known | None = None,
    ) -> list[tuple[str, Any]]:
        """Add the batch's events (`added`: times by profile at the time, event name and
        facet) and its merges (`moves`: merged, survivor) to the stored rows, read through
        `conn`; `final` is the profile a profile id ended in at the end of the batch. Answers
        the writes, to run in order in the batch's transaction: `(statement, parameters)`,
        a list of rows for the driver's executemany or one tuple.

        `known` holds every row of some profiles as the batches before wrote them, kept by
        the processor between batches (and updated here): those profiles' rows are not read
        again. On SQLite the batch before may still be committing while this one is built
        (the processor's pipeline): its rows are known, the store's may not have them yet.
        At most `KEEP_PROFILES` profiles are kept (those of this batch, where more)."""
        writes: list[tuple[str, Any]] = []
        if known is None:
            known = {}
        if not added and not moves:
            return writes
        # (pid, name, facet) -> [total, times]: the times gathered from every part, the
        # newest of them taken once at the end (one sort a row).
        rows: dict[tuple[str, str, str], list[Any]] = {}

        def take(key: tuple[str, str, str], total: int, recent: list[int]) -> None:
            row = rows.get(key)
            if row is None:
                rows[key] = [total, [*recent]]
            else:
                row[0] += total
                row[1] += recent

        for (pid, name, kind), times in added.items():
            take((final(pid), name, kind), len(times), times)
        merged = sorted({m for m, _ in moves})
        if merged:
            self._complete(conn, merged, known)
            for pid in merged:
                for (name, kind), (total, recent) in known.pop(pid).items():
                    take((final(pid), name, kind), total, recent)
            for start in range(0, len(merged), _CHUNK):
                chunk = merged[start : start + _CHUNK]
                writes.append((self.in_list(self.delete, len(chunk)), tuple(chunk)))
        if not rows:
            return writes
        targets = sorted({pid for pid, _, _ in rows})
        self._complete(conn, targets, known)
        for key in list(rows):  # the stored part of each row this batch changes
            stored = known[key[0]].get((key[1], key[2]))
            if stored is not None:
                take(key, *stored)
        upserts = []
        for (pid, name, kind), (total, times) in rows.items():
            recent = newest(times)
            upserts.append((pid, name, kind, total, orjson.dumps(recent).decode()))
            known[pid][(name, kind)] = (total, recent)
        if len(known) > KEEP_PROFILES:
            for pid in known.keys() - set(targets):
                del known[pid]
        writes.append((self.upsert, upserts))
        return writes

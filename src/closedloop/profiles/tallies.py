"""Event tallies: per live profile and track event name, how many and the newest times.

`did "Product Viewed" at least 2 times within 365 days` asks, per profile, whether the
second-newest such event lies within the window. Counted from the log that is a join of
every matching event with its identity and a group by profile (16 s for 10M events); a row
per profile and event name holding the count and the newest `RECENT` times answers it from
one index range (ADR 0009). The processor keeps the rows in the batch's transaction: the
events it applied, added under the profile they went to; a merge moves the merged profile's
rows onto the survivor. Both are sums of counts and unions of times, so the order of events
and merges within a batch does not matter, and a rebuild writes the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
import sqlalchemy as sa

__all__ = ["RECENT", "TallyWriter", "newest"]

# How many of the newest times a row keeps: `at least N times within D days` is answered
# from the tallies for N up to this, from the log above it.
RECENT = 10

_CHUNK = 500
_MAX_NAMES_FILTER = 200  # more names than this in a batch: load the profiles' rows whole

_LOAD = "SELECT profile_id, event, total, recent::t FROM event_tallies WHERE profile_id IN (?*)"
_UPSERT = (
    "INSERT INTO event_tallies (profile_id, event, total, recent) VALUES (?, ?, ?, ?j) "
    "ON CONFLICT (profile_id, event) DO UPDATE SET total = excluded.total, "
    "recent = excluded.recent"
)
_DELETE = "DELETE FROM event_tallies WHERE profile_id IN (?*)"


def newest(times: Iterable[int]) -> list[int]:
    """The newest `RECENT` of `times`, newest first (equal times each count)."""
    return sorted(times, reverse=True)[:RECENT]


class TallyWriter:
    """Writes one batch's tallies; `native` turns the statements above into the driver's
    SQL (`?` or `%s`, `::t` and `?j` casts) and `in_list` widens `?*` to n placeholders."""

    def __init__(self, native: Callable[[str], str], in_list: Callable[[str, int], str]) -> None:
        self.load = native(_LOAD)
        self.upsert = native(_UPSERT)
        self.delete = native(_DELETE)
        self.in_list = in_list

    def _rows(
        self, conn: sa.Connection, pids: list[str], names: set[str] | None
    ) -> Iterable[tuple[str, str, int, list[int]]]:
        for start in range(0, len(pids), _CHUNK):
            chunk = pids[start : start + _CHUNK]
            statement = self.in_list(self.load, len(chunk))
            for pid, name, total, recent in conn.exec_driver_sql(statement, tuple(chunk)):
                if names is None or name in names:
                    yield pid, name, total, orjson.loads(recent)

    def write(
        self,
        conn: sa.Connection,
        added: dict[tuple[str, str], list[int]],
        moves: list[tuple[str, str]],
        final: Callable[[str], str],
    ) -> None:
        """Add the batch's events (`added`: times by profile at the time and event name) and
        its merges (`moves`: merged, survivor) to the stored rows; `final` is the profile a
        profile id ended in at the end of the batch."""
        if not added and not moves:
            return
        rows: dict[tuple[str, str], list[Any]] = {}  # (profile, name) -> [total, recent]

        def take(pid: str, name: str, total: int, recent: list[int]) -> None:
            key = (final(pid), name)
            row = rows.get(key)
            if row is None:
                rows[key] = [total, newest(recent)]
            else:
                row[0] += total
                row[1] = newest(row[1] + recent)

        for (pid, name), times in added.items():
            take(pid, name, len(times), times)
        merged = sorted({m for m, _ in moves})
        if merged:
            for found in list(self._rows(conn, merged, None)):
                take(*found)
            for start in range(0, len(merged), _CHUNK):
                chunk = merged[start : start + _CHUNK]
                conn.exec_driver_sql(self.in_list(self.delete, len(chunk)), tuple(chunk))
        if not rows:
            return
        names = {name for _, name in rows}
        wanted = names if len(names) <= _MAX_NAMES_FILTER else None
        targets = sorted({pid for pid, _ in rows})
        for pid, name, total, recent in list(self._rows(conn, targets, wanted)):
            entry = rows.get((pid, name))
            if entry is not None:
                entry[0] += total
                entry[1] = newest(entry[1] + recent)
        conn.exec_driver_sql(
            self.upsert,
            [
                (pid, name, total, orjson.dumps(recent).decode())
                for (pid, name), (total, recent) in rows.items()
            ],
        )

"""Numbers that turn `mood is ...` and `churn risk` into index ranges.

A mood score sums decaying signals, `sum(v * 2^-((now - t) / h))`, so it changes with `now`
and no stored label stays true. But it factorises: for an anchor time `a`,

    score(now) = 2^-((now - a) / h) * K,    K = sum(v * 2^((t - a) / h)),

and K does not depend on `now`. The processor keeps K in each profile's derived document
(`mood_k`), with the time of the newest signal (`mood_last`) and of the newest churn-risk
signal (`mood_churn`); migration 0011 indexes all three. Then, for profiles whose signals
all lie in the past, `score >= threshold` is `K >= threshold * 2^((now - a) / h)`: one range
of an index. Profiles with a signal in the future (rare: imported future dates) are summed
exactly, found through `mood_last`.

The basis (`a`, `h`) is the one row of `mood_basis`. It changes when the half-life setting
changes, or when `now` drifts so far from the anchor that the powers would leave floating
point; `ensure_basis` then computes every profile's numbers again (with `index_numbers`, as
the processor does), holding the processor's cursor, and only after that do conditions use
the index (`usable_basis`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from closedloop import clock
from closedloop.config import MoodSettings, Settings
from closedloop.mood._tables import mood_basis
from closedloop.profiles import hold_derived_state
from closedloop.profiles._tables import profiles
from closedloop.store import begin_write, to_epoch_us

__all__ = [
    "CHURN_KEY",
    "K_KEY",
    "LAST_KEY",
    "MoodBasis",
    "ensure_basis",
    "generated_column",
    "index_numbers",
    "number",
    "read_basis",
    "usable_basis",
]

K_KEY = "mood_k"
LAST_KEY = "mood_last"
CHURN_KEY = "mood_churn"
DAY_US = 86_400_000_000
_LN2 = math.log(2.0)
# exp() of more than about 709 overflows a double; PostgreSQL raises on overflow and on
# underflow. Exponents are clamped to this; a basis is used only while `now` is within
# `_USE_LIMIT` of its anchor and replaced once beyond `_REBASE_AT`.
_CLAMP = 700.0
_USE_LIMIT = 600.0
_REBASE_AT = 300.0
_PAGE = 2_000

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoodBasis:
    anchor_us: int
    half_life_days: float
    # The newest signal of any profile, when read by `usable_basis`: a condition as of a
    # later time needs no check for signals after it.
    latest_us: int | None = None

    @classmethod
    def starting(cls, now: datetime, half_life_days: float) -> MoodBasis:
        """A new basis anchored at the start of `now`'s day (UTC)."""
        return cls(to_epoch_us(now) // DAY_US * DAY_US, half_life_days)

    def exponent(self, at_us: int) -> float:
        return _LN2 * (at_us - self.anchor_us) / (self.half_life_days * DAY_US)

    def power(self, at_us: int) -> float:
        """`2^((at - a) / h)`, as the stored numbers use it."""
        return math.exp(max(-_CLAMP, min(_CLAMP, self.exponent(at_us))))


def index_numbers(signals: Sequence[Sequence[Any]], basis: MoodBasis) -> dict[str, Any]:
    """The derived-document entries for a profile's signals `[time, value, rule, event,
    churn]`: K, the newest signal's time and the newest churn-risk signal's time."""
    return {
        K_KEY: math.fsum(s[1] * basis.power(s[0]) for s in signals),
        LAST_KEY: max((s[0] for s in signals), default=None),
        CHURN_KEY: max((s[0] for s in signals if s[4] == 1), default=None),
    }


def read_basis(conn: sa.Connection) -> MoodBasis | None:
    row = conn.execute(
        sa.select(mood_basis.c.anchor_us, mood_basis.c.half_life_days).where(mood_basis.c.id == 1)
    ).first()
    return None if row is None else MoodBasis(int(row[0]), float(row[1]))


def _fits(basis: MoodBasis | None, settings: MoodSettings, now: datetime, limit: float) -> bool:
    return (
        basis is not None
        and basis.half_life_days == settings.half_life_days
        and abs(basis.exponent(to_epoch_us(now))) <= limit
    )


def usable_basis(conn: sa.Connection, settings: MoodSettings, now: datetime) -> MoodBasis | None:
    """The basis, when every profile's numbers follow it and it suits `settings` at `now`,
    with the time of the newest signal (the end of an index)."""
    basis = read_basis(conn)
    if basis is None or not _fits(basis, settings, now, _USE_LIMIT):
        return None
    pg = conn.dialect.name == "postgresql"
    latest = conn.execute(
        sa.select(sa.func.max(number(LAST_KEY, pg))).select_from(profiles)
    ).scalar()
    return replace(basis, latest_us=None if latest is None else int(latest))


# (`closedloop.segments` builds on this module: its table by name, not by import)
_SEGMENTS = sa.table("segments", sa.column("refreshed_seq"))


def number(key: str, pg: bool) -> ColumnElement[Any]:
    """A profile's index number: on SQLite written exactly as migration 0011 indexes it (a
    literal path: SQLite matches indexed expressions literally); on PostgreSQL the generated
    column of migration 0014 (so that its index answers a count alone)."""
    if pg:
        return generated_column(key, sa.Float() if key == K_KEY else sa.BigInteger())
    return sa.func.json_extract(profiles.c.derived, sa.literal_column(f"'$.{key}'"))


def generated_column(name: str, type_: Any) -> ColumnElement[Any]:
    """A column PostgreSQL generates from a profile's documents (migration 0014: `mood_k`,
    `mood_last`, `mood_churn`, `nps_score`, `nps_at`); not in the table's metadata, which
    both backends share."""
    return sa.literal_column(f"profiles.{name}", type_)


def ensure_basis(engine: Engine, settings: Settings, now: datetime | None = None) -> bool:
    """Compute every profile's numbers again when the basis is missing, has another
    half-life or lies too far from `now`; answer whether it did."""
    now = now or clock.now()
    with engine.connect() as conn:
        if _fits(read_basis(conn), settings.mood, now, _REBASE_AT):
            return False
    basis = MoodBasis.starting(now, settings.mood.half_life_days)
    with begin_write(engine) as conn:
        if _fits(read_basis(conn), settings.mood, now, _REBASE_AT):
            return False  # another process did it meanwhile
        hold_derived_state(conn, settings)
        changed = _recompute(conn, basis)
        # The numbers the profile writes logged so far belong to the old basis: every
        # segment's next refresh is a full one (ADR 0015).
        conn.execute(_SEGMENTS.update().values(refreshed_seq=None))
        values = {
            "anchor_us": basis.anchor_us,
            "half_life_days": basis.half_life_days,
            "computed_at": clock.now(),
        }
        conn.execute(mood_basis.delete())
        conn.execute(mood_basis.insert().values(id=1, **values))
    _log.info("mood: index numbers of %d profiles computed for basis %s", changed, basis)
    return True


def _recompute(conn: sa.Connection, basis: MoodBasis) -> int:
    """Every profile's numbers from its signals, by `index_numbers` itself (not in SQL: the
    floating-point sums must be the ones the processor writes, so that a rebuild gives the
    same documents), in pages of profiles by id."""
    has_signals: Any = (
        profiles.c.derived.op("?")("mood")
        if conn.dialect.name == "postgresql"
        else sa.func.json_type(profiles.c.derived, "$.mood") == "array"
    )
    update = (
        profiles.update()
        .where(profiles.c.id == sa.bindparam("pid"))
        .values(derived=sa.bindparam("doc", type_=profiles.c.derived.type))
    )
    changed, after = 0, ""
    while True:
        page = conn.execute(
            sa.select(profiles.c.id, profiles.c.derived)
            .where(has_signals, profiles.c.id > after)
            .order_by(profiles.c.id)
            .limit(_PAGE)
        ).all()
        if not page:
            return changed
        rows = [
            {"pid": pid, "doc": {**doc, **index_numbers(doc["mood"] or [], basis)}}
            for pid, doc in page
        ]
        conn.execute(update, rows)
        changed += len(rows)
        after = page[-1][0]

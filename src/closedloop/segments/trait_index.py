"""Indexes on the traits marketers segment by (SQLite).

SQLite parses a profile's trait document again for every `json_extract`, so a trait
condition over a million profiles costs more than a second (docs/benchmarks.md). For each
trait named in `CLOSEDLOOP_SEGMENTS__INDEXED_TRAITS`, `ensure_trait_indexes` keeps an index
on `(json_extract(traits, '$."NAME"[0]'), merged_into)`, and a text equality on such a trait
compiles to exactly that expression (`trait_value`), so a count reads one range of the index
and no table row. Names are checked by the settings (`[A-Za-z_][A-Za-z0-9_]*`), the only
text put into this DDL. PostgreSQL reads jsonb fast enough for the live count and keeps none.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from closedloop.config import Settings
from closedloop.profiles._tables import profiles
from closedloop.store import begin_write

__all__ = ["PREFIX", "ensure_trait_indexes", "trait_value"]

PREFIX = "ix_profiles_trait_"
_log = logging.getLogger(__name__)


def _path(name: str) -> str:
    return f"'$.\"{name}\"[0]'"


def trait_value(name: str) -> ColumnElement[Any]:
    """The trait's value as the index holds it (SQLite; a checked name)."""
    return sa.func.json_extract(profiles.c.traits, sa.literal_column(_path(name)))


def ensure_trait_indexes(engine: Engine, settings: Settings) -> list[str]:
    """Create and drop trait indexes to match the setting; answer what changed."""
    if engine.dialect.name != "sqlite":
        return []
    wanted = {PREFIX + name: name for name in settings.segments.indexed_traits}
    query = sa.text(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'profiles' "
        "AND substr(name, 1, :n) = :prefix"
    ).bindparams(n=len(PREFIX), prefix=PREFIX)
    with engine.connect() as conn:
        existing = set(conn.execute(query).scalars())
    if existing == set(wanted):
        return []
    changes = []
    with begin_write(engine) as conn:
        for index in sorted(existing - set(wanted)):
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{index}"')
            changes.append(f"dropped {index}")
        for index, name in sorted(wanted.items()):
            if index not in existing:
                conn.exec_driver_sql(
                    f'CREATE INDEX IF NOT EXISTS "{index}" ON profiles '
                    f"(json_extract(traits, {_path(name)}), merged_into)"
                )
                changes.append(f"created {index}")
    _log.info("segments: trait indexes: %s", ", ".join(changes))
    return changes

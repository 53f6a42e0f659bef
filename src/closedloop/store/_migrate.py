"""Alembic, driven from code: `closedloop db upgrade` and `serve` call `upgrade`.

Alembic is imported when a function here is called, not with the store: a process that
never migrates (a feed worker, most CLI commands) starts without it (about 0.1 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["current_revision", "head_revision", "schema_problem", "upgrade"]


def _config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "closedloop.store:migrations")
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> list[str]:
    """Bring the schema of `engine`'s database to `revision` (the newest by default).
    Answers why a rebuild is due: the `REBUILD` notes of the revisions applied, where the
    processor had applied events before (empty for a new store). A revision that changes
    what the processor derives, in a way its migration cannot bring about for events
    processed before it, names what `closedloop rebuild` adds in its module's `REBUILD`."""
    # Importing the domain packages registers their tables on `metadata`.
    from alembic import command
    from alembic.script import ScriptDirectory

    import closedloop.feeds
    import closedloop.ingest
    import closedloop.mood
    import closedloop.profiles
    import closedloop.segments
    import closedloop.surveys  # noqa: F401

    before = current_revision(engine)
    config = _config(engine)
    command.upgrade(config, revision)
    after = current_revision(engine)
    if before is None or after is None or before == after or not _processed_events(engine):
        return []
    script = ScriptDirectory.from_config(config)
    applied = script.iterate_revisions(after, before)  # newest first, `before` excluded
    notes = [getattr(r.module, "REBUILD", None) for r in applied]
    return [note for note in reversed(notes) if note]


def _processed_events(engine: Engine) -> bool:
    """Whether the processor has applied events to the store (its cursor moved)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("processor_cursors"):
            return False
        moved = conn.exec_driver_sql(
            "SELECT 1 FROM processor_cursors WHERE name = 'main' AND event_id > 0"
        ).first()
        return moved is not None


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def schema_problem(engine: Engine) -> str | None:
    """Why this code cannot use the store's schema (no tables yet, an older revision, one
    it does not know), or None when the store is at its newest revision. Raises the
    driver's error where the store cannot be reached."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    current = current_revision(engine)
    script = ScriptDirectory.from_config(_config())
    head = script.get_current_head()
    if current == head:
        return None
    if current is None:
        return "has no tables yet: run `closedloop init`, or `closedloop db upgrade`"
    try:
        script.get_revision(current)
    except CommandError:
        return (
            f"is at revision {current}, which this closedloop does not know "
            f"(a newer version migrated it; this one needs {head})"
        )
    return f"is at revision {current}, this closedloop needs {head}: run `closedloop db upgrade`"

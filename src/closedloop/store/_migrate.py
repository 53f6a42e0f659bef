"""Alembic, driven from code: `closedloop db upgrade` and `serve` call `upgrade`."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

__all__ = ["current_revision", "head_revision", "upgrade"]


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "closedloop.store:migrations")
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema of `engine`'s database to `revision` (the newest by default)."""
    # Importing the domain packages registers their tables on `metadata`.
    import closedloop.feeds
    import closedloop.ingest
    import closedloop.mood
    import closedloop.profiles
    import closedloop.segments
    import closedloop.surveys  # noqa: F401

    command.upgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()

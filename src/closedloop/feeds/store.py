"""Saved feeds: create, change, read, delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.feeds._tables import feed_rows, feed_runs, feeds
from closedloop.feeds.definition import FeedDefinition, check_name, parse_feed
from closedloop.segments import condition_tree
from closedloop.segments._tables import segments
from closedloop.store import begin_write, store_definition

__all__ = [
    "FeedHealth",
    "SavedFeed",
    "check_sources",
    "delete_feed",
    "get_feed",
    "health",
    "list_feeds",
    "save_feed",
]

_MAX_FEEDS = 200


@dataclass(frozen=True)
class SavedFeed:
    definition: FeedDefinition
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    running: bool
    last_run: dict[str, Any] | None

    @property
    def name(self) -> str:
        return self.definition.name

    def as_json(self) -> dict[str, Any]:
        return {
            **self.definition.as_json(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "next_run_at": self.next_run_at.isoformat() if self.next_run_at else None,
            "running": self.running,
            "last_run": self.last_run,
        }


def check_sources(conn: sa.Connection, definition: FeedDefinition) -> None:
    """The segments a feed reads exist, and its condition parses."""
    if definition.source.segments:
        known = set(
            conn.execute(
                sa.select(segments.c.name).where(segments.c.name.in_(definition.source.segments))
            ).scalars()
        )
        for index, name in enumerate(definition.source.segments):
            if name not in known:
                raise InvalidInputError(
                    f"no segment `{name}`: see `GET /v1/segments`",
                    field=f"source.segments[{index}]",
                )
    if definition.source.condition is not None:
        try:
            condition_tree(definition.source.condition)
        except InvalidInputError as exc:
            raise InvalidInputError(exc.message, field="source.condition") from exc


def _last_runs(conn: sa.Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    if not names:
        return {}
    newest = (
        sa.select(feed_runs.c.feed, sa.func.max(feed_runs.c.created_at).label("at"))
        .where(feed_runs.c.feed.in_(names))
        .group_by(feed_runs.c.feed)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            feed_runs.c.feed,
            feed_runs.c.id,
            feed_runs.c.state,
            feed_runs.c.finished_at,
            feed_runs.c.rows,
            feed_runs.c.error,
        ).join(
            newest,
            sa.and_(newest.c.feed == feed_runs.c.feed, newest.c.at == feed_runs.c.created_at),
        )
    ).all()
    return {
        r.feed: {
            "id": r.id,
            "state": r.state,
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "rows": r.rows,
            "error": r.error,
        }
        for r in rows
    }


def _saved(row: Any, last: dict[str, dict[str, Any]]) -> SavedFeed:
    now = clock.now()
    return SavedFeed(
        definition=parse_feed(row.definition),
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_run_at=row.next_run_at,
        running=row.lease_until is not None and row.lease_until > now,
        last_run=last.get(row.name),
    )


def list_feeds(engine: Engine) -> list[SavedFeed]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(feeds).order_by(feeds.c.name)).all()
        last = _last_runs(conn, [r.name for r in rows])
    return [_saved(r, last) for r in rows]


def get_feed(engine: Engine, name: str) -> SavedFeed:
    with engine.connect() as conn:
        row = conn.execute(sa.select(feeds).where(feeds.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no feed `{name[:64]}`: see `closedloop feeds list`")
        last = _last_runs(conn, [name])
    return _saved(row, last)


def save_feed(
    engine: Engine, document: Any, *, name: str | None = None, create: bool | None
) -> SavedFeed:
    """Create (`create=True`), replace (`False`) or either (`None`, for `apply`) a feed.

    A changed definition is scheduled anew; a delta feed keeps what it delivered, so the
    next run sends only differences (a changed column list changes every row's hash, so
    every row is sent once more).
    """
    if name is not None:
        check_name(name)
    definition = parse_feed(document, name=name)
    with begin_write(engine) as conn:
        check_sources(conn, definition)
        store_definition(
            conn,
            feeds,
            definition.name,
            definition.as_json(),
            create=create,
            kind="feed",
            limit=_MAX_FEEDS,
            on_change={"next_run_at": None},  # scheduled anew
        )
    return get_feed(engine, definition.name)


def delete_feed(engine: Engine, name: str) -> None:
    """Delete a feed with its run log and delta reference (not a running one)."""
    now = clock.now()
    with begin_write(engine) as conn:
        row = conn.execute(sa.select(feeds.c.lease_until).where(feeds.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no feed `{name[:64]}`")
        if row.lease_until is not None and row.lease_until > now:
            raise ConflictError(f"feed `{name}` is running: delete it when the run is over")
        conn.execute(feed_rows.delete().where(feed_rows.c.feed == name))
        conn.execute(feed_runs.delete().where(feed_runs.c.feed == name))
        conn.execute(feeds.delete().where(feeds.c.name == name))


@dataclass(frozen=True)
class FeedHealth:
    feed: str
    last_success_at: datetime | None
    last_failed: bool  # the newest finished run failed


def _newest(conn: sa.Connection, state: str) -> dict[str, datetime]:
    rows = conn.execute(
        sa.select(feed_runs.c.feed, sa.func.max(feed_runs.c.finished_at))
        .where(feed_runs.c.state == state)
        .group_by(feed_runs.c.feed)
    )
    return {feed: at for feed, at in rows if at is not None}


def health(engine: Engine) -> list[FeedHealth]:
    """Per feed: the newest successful run and whether the newest finished run failed."""
    with engine.connect() as conn:
        names = list(conn.execute(sa.select(feeds.c.name).order_by(feeds.c.name)).scalars())
        success, failure = (_newest(conn, state) for state in ("succeeded", "failed"))
    found = []
    for name in names:
        ok, bad = success.get(name), failure.get(name)
        found.append(FeedHealth(name, ok, bad is not None and (ok is None or bad > ok)))
    return found

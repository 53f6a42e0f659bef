"""Retention (GDPR Art. 5(1)(e)): each class of data is deleted when older than its setting.

Run daily by the privacy job in `serve` and `worker`, or at once with `closedloop privacy
retention`. Raw events go by arrival time; profiles keep what was derived from them (a
rebuild then starts from the events still kept).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.ingest._tables import events, failed_events
from closedloop.privacy._tables import privacy_audit
from closedloop.privacy.audit import record
from closedloop.segments._tables import mood_sizes, segment_changes
from closedloop.segments.history import forget_changes
from closedloop.store import begin_write
from closedloop.surveys._tables import survey_answers, survey_decisions, survey_invitations

__all__ = ["apply_retention", "last_retention"]

_CHUNK = 5000


def _classes(settings: Settings) -> list[tuple[str, sa.Table, sa.Column[Any], int]]:
    r = settings.privacy
    return [
        ("events", events, events.c.received_at, r.events_days),
        ("failed_events", failed_events, failed_events.c.received_at, r.failed_events_days),
        (
            "survey_invitations",
            survey_invitations,
            survey_invitations.c.created_at,
            r.invitations_days,
        ),
        ("survey_decisions", survey_decisions, survey_decisions.c.at, r.invitations_days),
        ("survey_answers", survey_answers, survey_answers.c.answered_at, r.answers_days),
        ("segment_changes", segment_changes, segment_changes.c.at, r.history_days),
        ("mood_sizes", mood_sizes, mood_sizes.c.at, r.history_days),
        ("privacy_audit", privacy_audit, privacy_audit.c.at, r.audit_days),
    ]


# Rows of other tables that name a deleted row: deleted first, by its keys.
_DEPENDENTS: dict[str, Callable[[sa.Connection, list[Any]], object]] = {
    "segment_changes": forget_changes,  # (the history's batched index by profile)
}


def _delete_older(engine: Engine, table: sa.Table, column: sa.Column[Any], cutoff: datetime) -> int:
    """Delete in chunks (short transactions: ingest and the processor go on meanwhile)."""
    (key,) = table.primary_key.columns
    dependents = _DEPENDENTS.get(table.name)
    total = 0
    while True:
        with begin_write(engine) as conn:
            ids = conn.execute(sa.select(key).where(column < cutoff).limit(_CHUNK)).scalars().all()
            if not ids:
                return total
            if dependents is not None:
                dependents(conn, list(ids))
            total += conn.execute(table.delete().where(key.in_(ids))).rowcount
        if len(ids) < _CHUNK:
            return total


def _old_files(folder: Path, cutoff: datetime) -> int:
    if not folder.is_dir():
        return 0
    limit = cutoff.timestamp()
    removed = 0
    for root, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            path = Path(root) / name
            try:
                if not path.is_symlink() and path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError:
                continue  # gone meanwhile, or not ours to delete: the next run tries again
    return removed


def apply_retention(
    engine: Engine, settings: Settings, *, now: datetime | None = None, actor: str = "retention"
) -> dict[str, int]:
    """Delete what is older than its retention; answer the rows (and files) deleted."""
    now = now or clock.now()
    counts: dict[str, int] = {}
    for name, table, column, days in _classes(settings):
        if days > 0:
            counts[name] = _delete_older(engine, table, column, now - timedelta(days=days))
    days = settings.privacy.feed_files_days
    if days > 0:
        cutoff = now - timedelta(days=days)
        counts["feed_files"] = _old_files(settings.feeds.local_dir, cutoff) + _old_files(
            settings.feeds.staging_dir, cutoff
        )
    with begin_write(engine) as conn:
        record(conn, actor, "retention", None, {"deleted": counts})
    return counts


def last_retention(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        found: datetime | None = conn.execute(
            sa.select(privacy_audit.c.at)
            .where(privacy_audit.c.action == "retention")
            .order_by(privacy_audit.c.at.desc())
            .limit(1)
        ).scalar()
    return found

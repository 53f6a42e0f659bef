"""The privacy audit log: who erased, exported or re-keyed what and when, never the personal
data itself (identifier kinds, counts and request ids only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.privacy._tables import privacy_audit

__all__ = ["AuditEntry", "list_audit", "record"]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": self.details,
        }


def record(
    conn: sa.Connection, actor: str, action: str, subject: str | None, details: dict[str, Any]
) -> None:
    """Add an entry in `conn`'s transaction."""
    conn.execute(
        privacy_audit.insert().values(
            at=clock.now(), actor=actor[:100], action=action[:32], subject=subject, details=details
        )
    )


def list_audit(engine: Engine, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
    """The newest entries first; `before` an entry id to page on."""
    stmt = sa.select(privacy_audit).order_by(privacy_audit.c.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(privacy_audit.c.id < before)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [AuditEntry(r.id, r.at, r.actor, r.action, r.subject, dict(r.details)) for r in rows]

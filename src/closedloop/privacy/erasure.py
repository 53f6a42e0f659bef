"""Erasure (GDPR Art. 17): the whole identity cluster out of every table, for good.

A request first suppresses every identifier of the person (keyed hashes, see
`identity.suppression`), so nothing of hers is taken in again, and records the cluster's
profile ids on the request. The erasure itself is one transaction that holds the processor's
cursor (no batch runs meanwhile and every processor drops what it keeps in memory), runs each
table's erase handler from the registry, and marks the request done with the counts per
table and nothing else. If the process dies, the transaction rolls back and the request
stays `running`; once its lease expires the privacy job (in `serve` and `worker`) or
`closedloop privacy resume` runs it again.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.feeds._tables import feed_rows
from closedloop.identity._tables import suppressions
from closedloop.identity.suppression import suppression_hash, suppression_secret
from closedloop.privacy._tables import privacy_erasures
from closedloop.privacy.audit import record
from closedloop.privacy.registry import REGISTRY, subject_of
from closedloop.profiles import hold_derived_state, process_through
from closedloop.profiles.read import LOOKUP_KINDS, locate, resolve_profile_id
from closedloop.store import begin_write, bulk_insert_ignoring_duplicates
from closedloop.surveys._tables import survey_answers

__all__ = [
    "KINDS",
    "Erasure",
    "clean_actor",
    "find_subject",
    "get_erasure",
    "list_erasures",
    "request_erasure",
    "resume_erasures",
    "run_erasure",
]

_log = logging.getLogger(__name__)
KINDS = (*LOOKUP_KINDS, "profile_id")
_ACTOR = re.compile(r"[^\w .:@/()#,+-]")


@dataclass(frozen=True)
class Erasure:
    id: str
    state: str
    identifier_kind: str
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    counts: dict[str, int]
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "identifier_kind": self.identifier_kind,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "attempts": self.attempts,
            "counts": self.counts,
            "error": self.error,
        }


def _erasure(row: Any) -> Erasure:
    return Erasure(
        id=row.id,
        state=row.state,
        identifier_kind=row.identifier_kind,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        attempts=row.attempts,
        counts=dict(row.counts or {}),
        error=row.error,
    )


def clean_actor(actor: str) -> str:
    """Who asked, as a short label (`cli:anna`, `api: ticket 4711`): printable, 100 chars."""
    text = _ACTOR.sub("", actor or "").strip()[:100]
    return text or "unknown"


def find_subject(
    conn: sa.Connection, settings: Settings, kind: str, value: Any
) -> tuple[str | None, str | None]:
    """Check the identifier; (the surviving profile holding it or None, its identity key)."""
    if kind not in KINDS:
        raise InvalidInputError(
            f"invalid identifier `{str(kind)[:40]}`: use one of {', '.join(KINDS)}", field=kind
        )
    if not isinstance(value, str):
        raise InvalidInputError(f"invalid `{kind}`: expected a string", field=kind)
    if kind == "profile_id":
        if not value or len(value) > 40 or "\x00" in value:
            raise InvalidInputError("invalid `profile_id`: expected 1 to 40 characters", field=kind)
        return resolve_profile_id(conn, value), None
    found, key = locate(conn, kind, value, region=settings.identity.default_region)
    return (resolve_profile_id(conn, found) if found else None), key


def _suppress(conn: sa.Connection, settings: Settings, erasure_id: str, keys: set[str]) -> int:
    secret = suppression_secret(settings)
    now = clock.now()
    rows = [(suppression_hash(secret, key), erasure_id, now) for key in sorted(keys)]
    if not rows:
        return 0
    return bulk_insert_ignoring_duplicates(
        conn, suppressions, ("hash", "erasure_id", "created_at"), rows, conflict_columns=("hash",)
    )


def request_erasure(
    engine: Engine, settings: Settings, *, kind: str, value: Any, requested_by: str
) -> Erasure:
    """Erase the person holding the identifier, now. Someone the hub does not know is still
    suppressed (the identifier never creates a profile later)."""
    actor = clean_actor(requested_by)
    process_through(engine, settings)  # every event taken so far belongs to the cluster
    erasure_id = "er_" + secrets.token_hex(10)
    now = clock.now()
    with begin_write(engine) as conn:
        found, key = find_subject(conn, settings, kind, value)
        subject = subject_of(conn, [found]) if found else None
        keys = set(subject.keys if subject else ()) | ({key} if key else set())
        _suppress(conn, settings, erasure_id, keys)
        conn.execute(
            privacy_erasures.insert().values(
                id=erasure_id,
                state="running",
                identifier_kind=kind,
                requested_by=actor,
                requested_at=now,
                started_at=now,
                lease_until=now + timedelta(seconds=settings.privacy.lease_seconds),
                attempts=1,
                profile_ids=list(subject.profile_ids) if subject else [],
                counts={},
            )
        )
        record(
            conn,
            actor,
            "erasure_requested",
            erasure_id,
            {"identifier_kind": kind, "known": found is not None, "identifiers": len(keys)},
        )
    return run_erasure(engine, settings, erasure_id)


def _recipients(
    conn: sa.Connection, settings: Settings, profile_ids: tuple[str, ...]
) -> dict[str, list[str]]:
    """Who got her data and must hear of the erasure (Art. 19): the delta feeds that
    delivered her (their next run carries the delete) and, if she answered a survey, the
    tools answers are forwarded to."""
    feeds_told: set[str] = set()
    answered = False
    for start in range(0, len(profile_ids), 500):
        chunk = list(profile_ids[start : start + 500])
        feeds_told.update(
            conn.execute(
                sa.select(feed_rows.c.feed).where(feed_rows.c.profile_id.in_(chunk)).distinct()
            ).scalars()
        )
        answered = answered or bool(
            conn.execute(
                sa.select(survey_answers.c.invitation_id)
                .where(survey_answers.c.profile_id.in_(chunk))
                .limit(1)
            ).first()
        )
    forwarded = (
        sorted({httpx.URL(t.url).host for t in settings.surveys.forward}) if answered else []
    )
    return {"delta_feeds": sorted(feeds_told), "forwarded_to": forwarded}


def run_erasure(engine: Engine, settings: Settings, erasure_id: str) -> Erasure:
    """Erase what the request names, in one transaction (again after an interruption)."""
    try:
        with begin_write(engine) as conn:
            hold_derived_state(conn, settings)
            row = conn.execute(
                sa.select(privacy_erasures).where(privacy_erasures.c.id == erasure_id)
            ).first()
            if row is None:
                raise NotFoundError(f"no erasure `{erasure_id[:60]}`")
            if row.state == "done":
                return _erasure(row)
            subject = subject_of(conn, row.profile_ids or [])
            _suppress(conn, settings, erasure_id, set(subject.keys))  # ids joined meanwhile
            recipients = _recipients(conn, settings, subject.profile_ids)
            counts: dict[str, int] = {}
            for entry in REGISTRY:
                if entry.erase is not None:
                    counts[str(entry.table.name)] = entry.erase(conn, subject)
            counts["profiles_in_cluster"] = len(subject.profile_ids)
            conn.execute(
                privacy_erasures.update()
                .where(privacy_erasures.c.id == erasure_id)
                .values(
                    state="done",
                    finished_at=clock.now(),
                    lease_until=None,
                    profile_ids=None,
                    counts=counts,
                    error=None,
                )
            )
            details = {"counts": counts, "recipients": recipients}
            record(conn, row.requested_by, "erasure_done", erasure_id, details)
    except (InvalidInputError, NotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - recorded; the lease brings it back
        _log.exception("privacy: erasure %s failed; it is resumed after its lease", erasure_id)
        with begin_write(engine) as conn:
            conn.execute(
                privacy_erasures.update()
                .where(privacy_erasures.c.id == erasure_id)
                .values(error=f"{type(exc).__name__}: interrupted; resumed after the lease")
            )
    return get_erasure(engine, erasure_id)


def resume_erasures(engine: Engine, settings: Settings, *, force: bool = False) -> int:
    """Run again the erasures whose worker stopped (lease expired, or all with `force`)."""
    now = clock.now()
    c = privacy_erasures.c
    with engine.connect() as conn:
        stmt = sa.select(c.id, c.lease_until).where(c.state == "running")
        if not force:
            stmt = stmt.where(sa.or_(c.lease_until.is_(None), c.lease_until < now))
        pending = conn.execute(stmt.order_by(c.requested_at)).all()
    done = 0
    for erasure_id, lease in pending:
        with begin_write(engine) as conn:
            claimed = conn.execute(
                privacy_erasures.update()
                .where(c.id == erasure_id, c.state == "running", c.lease_until == lease)
                .values(
                    attempts=c.attempts + 1,
                    lease_until=now + timedelta(seconds=settings.privacy.lease_seconds),
                )
            ).rowcount
        if claimed == 1 and run_erasure(engine, settings, erasure_id).state == "done":
            done += 1
    return done


def get_erasure(engine: Engine, erasure_id: str) -> Erasure:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(privacy_erasures).where(privacy_erasures.c.id == erasure_id[:40])
        ).first()
    if row is None:
        raise NotFoundError(f"no erasure `{erasure_id[:60]}`")
    return _erasure(row)


def list_erasures(engine: Engine, *, limit: int = 100) -> list[Erasure]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(privacy_erasures)
            .order_by(privacy_erasures.c.requested_at.desc(), privacy_erasures.c.id)
            .limit(limit)
        ).all()
    return [_erasure(row) for row in rows]

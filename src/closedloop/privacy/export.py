"""Subject export (GDPR Art. 15 and 20): everything the hub holds about one person, as JSON,
from the same registry the erasure uses, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.errors import NotFoundError
from closedloop.identity.graph import split_key
from closedloop.privacy.audit import record
from closedloop.privacy.erasure import clean_actor, find_subject
from closedloop.privacy.registry import REGISTRY, subject_of
from closedloop.profiles.read import get_profile
from closedloop.store import begin_write

__all__ = ["export_subject"]


def export_subject(
    engine: Engine, settings: Settings, *, kind: str, value: Any, requested_by: str
) -> dict[str, Any]:
    """The person's profile, identifiers and every row of hers, table by table."""
    with engine.connect() as conn:
        found, _key = find_subject(conn, settings, kind, value)
        if found is None:
            raise NotFoundError(f"nobody with this `{kind}` is known")
        subject = subject_of(conn, [found])
        tables = {
            str(entry.table.name): entry.export(conn, subject)
            for entry in REGISTRY
            if entry.export is not None
        }
    profile = get_profile(engine, found, purposes=settings.profiles.consent_purposes)
    with begin_write(engine) as conn:
        record(
            conn,
            clean_actor(requested_by),
            "export",
            None,
            {
                "identifier_kind": kind,
                "rows": {name: len(rows) for name, rows in tables.items()},
            },
        )
    identifiers = [
        {"kind": kind_of, "value": value_of}
        for kind_of, value_of in (split_key(k) for k in subject.keys)
    ]
    return {
        "generated_at": clock.now().isoformat(),
        "profile_id": found,
        "profile": profile.as_json(),
        "identifiers": identifiers,
        "customer_keys": list(subject.customer_keys),
        "tables": tables,
    }

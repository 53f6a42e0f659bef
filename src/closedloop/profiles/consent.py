"""Consent stated through the API: written to the event log like any other statement.

`PUT /v1/profiles/{id}/consent` appends a `Consent Updated` track event (Segment's consent
format, `context.consent.categoryPreferences`) from the internal `closedloop-api` source,
then processes the log up to it, so the change is in the profile's history and a rebuild
from the log gives it back.
"""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock, ingest
from closedloop.config import Settings
from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.identity._tables import identities
from closedloop.ingest.log import append
from closedloop.profiles.processor import process_through
from closedloop.profiles.read import resolve_profile_id

__all__ = ["API_SOURCE", "check_statements", "record_for_profile", "set_consent"]

API_SOURCE = "closedloop-api"


def check_statements(statements: dict[str, Any], purposes: tuple[str, ...]) -> dict[str, bool]:
    """`{"surveys": true}`: every key a configured purpose, every value true or false."""
    if not statements:
        raise InvalidInputError(
            f'no consent given: send purposes with true or false, e.g. `{{"{purposes[0]}": true}}`',
            field="consent",
        )
    checked: dict[str, bool] = {}
    for purpose, granted in statements.items():
        if purpose not in purposes:
            raise InvalidInputError(
                f"unknown purpose `{str(purpose)[:60]}`: expected one of {', '.join(purposes)}",
                field=str(purpose)[:60],
            )
        if not isinstance(granted, bool):
            raise InvalidInputError(
                f"invalid `{purpose}` `{str(granted)[:40]}`: expected true or false",
                field=purpose,
            )
        checked[purpose] = granted
    return checked


def set_consent(
    engine: Engine, settings: Settings, profile_id: str, statements: dict[str, Any]
) -> str:
    """Record the consent statements for the profile; answer the (surviving) profile id."""
    checked = check_statements(statements, settings.profiles.consent_purposes)
    now = clock.now()
    message: dict[str, Any] = {
        "type": "track",
        "event": "Consent Updated",
        "messageId": "consent-" + secrets.token_hex(12),
        "timestamp": now.isoformat(),
        "properties": dict(checked),
        "context": {"consent": {"categoryPreferences": dict(checked)}},
    }
    found, _who = record_for_profile(engine, settings, profile_id, [message], source=API_SOURCE)
    return found


def record_for_profile(
    engine: Engine,
    settings: Settings,
    profile_id: str,
    messages: list[dict[str, Any]],
    *,
    source: str,
) -> tuple[str, dict[str, str]]:
    """Append `messages` about the profile (or the one it was merged into) to the event log
    from the hub's own `source`, under the profile's user id (else an anonymous id), and
    process the log up to them; answer the profile id and the id fields used."""
    with engine.connect() as conn:
        found = resolve_profile_id(conn, profile_id)
        if found is None:
            raise NotFoundError(f"no profile `{profile_id[:60]}`")
        keys = (
            conn.execute(
                sa.select(identities.c.key)
                .where(identities.c.profile_id == found)
                .order_by(identities.c.key)
            )
            .scalars()
            .all()
        )
    user = next((k[2:] for k in keys if k.startswith("u:")), None)
    anonymous = next((k[2:] for k in keys if k.startswith("a:")), None)
    if user is None and anonymous is None:
        raise NotFoundError(f"profile `{found}` has no user or anonymous id to record on")
    who: dict[str, str] = {"userId": user} if user is not None else {"anonymousId": anonymous or ""}
    now = clock.now()
    limits = settings.ingest
    rows = [
        ingest.normalise_message(
            {**message, **who}, call_type=None, limits=limits, received_at=now, sent_at=None
        )
        for message in messages
    ]
    source_id = ingest.ensure_source(engine, source, kind="server")
    with engine.begin() as conn:
        append(conn, [row.as_tuple(source_id) for row in rows])
    process_through(engine, settings)  # the answer shows the statements
    return found, who

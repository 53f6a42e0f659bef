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
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.identity._tables import identities
from closedloop.ingest.log import append
from closedloop.profiles.processor import process_available
from closedloop.profiles.read import resolve_profile_id

__all__ = ["API_SOURCE", "check_statements", "set_consent"]

API_SOURCE = "closedloop-api"


def _api_source_id(engine: Engine) -> int:
    try:
        return ingest.get_source(engine, API_SOURCE).id
    except NotFoundError:
        try:
            return ingest.add_source(engine, API_SOURCE, kind="server").source.id
        except ConflictError:  # made meanwhile by another request
            return ingest.get_source(engine, API_SOURCE).id


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
        raise NotFoundError(f"profile `{found}` has no user or anonymous id to record consent on")
    now = clock.now()
    message: dict[str, Any] = {
        "type": "track",
        "event": "Consent Updated",
        "messageId": "consent-" + secrets.token_hex(12),
        "timestamp": now.isoformat(),
        "properties": dict(checked),
        "context": {"consent": {"categoryPreferences": dict(checked)}},
    }
    if user is not None:
        message["userId"] = user
    else:
        message["anonymousId"] = anonymous
    row = ingest.normalise_message(
        message, call_type=None, limits=settings.ingest, received_at=now, sent_at=None
    )
    source_id = _api_source_id(engine)
    with engine.begin() as conn:
        append(conn, [row.as_tuple(source_id)])
    process_available(engine, settings)
    return found

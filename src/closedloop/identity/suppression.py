"""Suppressed identifiers: what an erasure leaves behind so that the person stays erased.

Each identifier of an erased person (`u:` user id, `a:` anonymous id, `e:` e-mail, `p:`
phone, as keyed in the identity graph) is kept as `HMAC-SHA256(secret, "suppress:" + key)`:
the list can answer "is this one erased?" but gives nobody the identifiers back (a plain
hash of an e-mail reverses by dictionary). The tracking API drops events carrying one (and
answers 200, so SDKs do not retry), the processor drops any that got into the log anyway, and
no profile is created for them.

Kept per process as a set and reloaded when the table's row count changes (checked at most
every `refresh_seconds`); the processor reloads inside each batch's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.config import Settings
from closedloop.identity._tables import suppressions
from closedloop.identity.normalise import normalise_email, normalise_phone

__all__ = ["SuppressionList", "message_keys", "suppression_hash", "suppression_secret"]


def suppression_secret(settings: Settings) -> bytes:
    """The secret of the suppression hashes: the hub's secret key (else the customer key's).

    Not the customer key's own secret, so that rotating that one keeps the list valid.
    """
    secret = settings.secret_key or settings.identity.customer_key_secret
    if secret is None:
        return b"closedloop-unset-secret"  # `closedloop init` always sets one
    return secret.get_secret_value().encode()


def suppression_hash(secret: bytes, key: str) -> str:
    """The keyed hash of one identity key (`e:anna@example.com`)."""
    return hmac.new(secret, b"suppress:" + key.encode("utf-8"), hashlib.sha256).hexdigest()


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        text = str(value)
        return text or None
    return None


def message_keys(
    kind: str,
    user_id: str | None,
    anonymous_id: str | None,
    payload: dict[str, Any],
    *,
    region: str,
) -> list[str]:
    """The identity keys one message carries: its user and anonymous id, an alias's
    previous id, and the e-mail and phone in its traits (normalised as the graph does)."""
    keys: list[str] = []
    if user_id:
        keys.append("u:" + user_id)
    if anonymous_id:
        keys.append("a:" + anonymous_id)
    previous = _text(payload.get("previousId")) if kind == "alias" else None
    if previous:
        keys += ["u:" + previous, "a:" + previous]
    context = payload.get("context")
    found = [payload.get("traits"), context.get("traits") if isinstance(context, dict) else None]
    for traits in found:
        if not isinstance(traits, dict):
            continue
        email = traits.get("email")
        if isinstance(email, str) and email:
            normalised = normalise_email(email).value
            if normalised:
                keys.append("e:" + normalised)
        phone = traits.get("phone")
        if isinstance(phone, str | int) and not isinstance(phone, bool) and phone != "":
            number = normalise_phone(phone, region=region).value
            if number:
                keys.append("p:" + number)
    return keys


class SuppressionList:
    """The suppressed hashes of one process, reloaded when the table changes."""

    def __init__(self, settings: Settings, *, refresh_seconds: float = 2.0) -> None:
        self._secret = suppression_secret(settings)
        self._region = settings.identity.default_region
        self._refresh = refresh_seconds
        self._hashes: frozenset[str] = frozenset()
        self._count = -1
        self._checked = 0.0
        self._lock = threading.Lock()

    @property
    def empty(self) -> bool:
        return not self._hashes

    def stale(self) -> bool:
        return time.monotonic() - self._checked >= self._refresh

    def refresh(self, source: Engine | sa.Connection) -> None:
        """Reload when the table's row count differs from the one loaded."""
        with self._lock:
            if isinstance(source, Engine):
                with source.connect() as conn:
                    self._load(conn)
            else:
                self._load(source)
            self._checked = time.monotonic()

    def _load(self, conn: sa.Connection) -> None:
        count = int(conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar_one())
        if count != self._count:
            found = conn.execute(sa.select(suppressions.c.hash)).scalars().all()
            self._hashes, self._count = frozenset(found), count

    def suppressed(self, keys: Iterable[str]) -> bool:
        hashes = self._hashes
        if not hashes:
            return False
        secret = self._secret
        return any(suppression_hash(secret, key) in hashes for key in keys)

    def row_suppressed(self, row: tuple[Any, ...]) -> bool:
        """Whether an event-log row (`EventRow.as_tuple` order) carries a suppressed id."""
        if not self._hashes:
            return False
        kind, user_id, anonymous_id, payload = row[2], row[4], row[5], row[10]
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = {}
        if not isinstance(document, dict):
            document = {}
        return self.suppressed(
            message_keys(kind, user_id, anonymous_id, document, region=self._region)
        )

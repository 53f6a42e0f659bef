"""Access: admin tokens kept hashed (`closedloop tokens add|list|revoke`), checked next to
the bootstrap token from the settings."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.access._tables import admin_tokens
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.store import begin_write

__all__ = ["AdminToken", "TokenChecker", "add_token", "list_tokens", "revoke_token"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_PREFIX = "clat_"


@dataclass(frozen=True)
class AdminToken:
    name: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hint": self.hint,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def add_token(engine: Engine, name: str) -> str:
    """Make a token called `name`; answer it (shown once, only its hash is kept)."""
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid token name `{name[:40]}`: lower-case letters, digits, `_`, `.`, `-`",
            field="name",
        )
    token = _PREFIX + secrets.token_urlsafe(32)
    with begin_write(engine) as conn:
        if conn.execute(sa.select(admin_tokens.c.name).where(admin_tokens.c.name == name)).first():
            raise ConflictError(f"a token `{name}` exists already: revoke it first")
        conn.execute(
            admin_tokens.insert().values(
                name=name, token_hash=_digest(token), hint=token[:9], created_at=clock.now()
            )
        )
    return token


def list_tokens(engine: Engine) -> list[AdminToken]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(admin_tokens).order_by(admin_tokens.c.name)).all()
    return [AdminToken(r.name, r.hint, r.created_at, r.last_used_at) for r in rows]


def revoke_token(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        gone = conn.execute(admin_tokens.delete().where(admin_tokens.c.name == name)).rowcount
    if not gone:
        raise NotFoundError(f"no token `{name[:60]}`")


class TokenChecker:
    """Checks bearer tokens against the stored hashes, each answer cached a few seconds (a
    revoked token stops within them)."""

    def __init__(self, engine: Engine, *, cache_seconds: float = 5.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def valid(self, token: str) -> bool:
        if not token.startswith(_PREFIX) or len(token) > 100:
            return False
        digest = _digest(token)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self._cache_seconds:
            return cached[0]
        with self._engine.begin() as conn:
            found = conn.execute(
                admin_tokens.update()
                .where(admin_tokens.c.token_hash == digest)
                .values(last_used_at=clock.now())
            ).rowcount
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (found == 1, now)
        return found == 1

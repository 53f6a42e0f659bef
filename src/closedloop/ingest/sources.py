"""Sources (touchpoints) and their write keys.

A write key is shown once, when made or rotated; the store keeps only its SHA-256 (keys are
32 random bytes from `secrets`, so a plain hash cannot be reversed by a dictionary).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NewType, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from closedloop.ingest._tables import sources
from closedloop.store import begin_write

__all__ = [
    "SOURCE_KINDS",
    "NewSourceKey",
    "Source",
    "SourceId",
    "SourceKind",
    "WriteKeyResolver",
    "add_source",
    "ensure_source",
    "get_source",
    "hash_write_key",
    "list_sources",
    "rotate_write_key",
    "set_source_enabled",
]

SourceId = NewType("SourceId", int)
SourceKind = Literal["web", "app", "server", "pos", "email", "callcenter"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_KEY_PREFIX = "wk_"


@dataclass(frozen=True)
class Source:
    id: SourceId
    name: str
    kind: str
    key_hint: str
    enabled: bool
    created_at: datetime
    key_rotated_at: datetime | None


@dataclass(frozen=True)
class NewSourceKey:
    """A source together with its write key in clear: shown once, never stored."""

    source: Source
    write_key: str


def hash_write_key(write_key: str) -> str:
    return hashlib.sha256(write_key.encode("utf-8", "surrogatepass")).hexdigest()


def _new_key() -> str:
    return _KEY_PREFIX + secrets.token_urlsafe(32)


def _row_to_source(row: sa.Row[tuple[object, ...]]) -> Source:
    m = row._mapping
    return Source(
        id=SourceId(m["id"]),
        name=m["name"],
        kind=m["kind"],
        key_hint=m["key_hint"],
        enabled=bool(m["enabled"]),
        created_at=m["created_at"],
        key_rotated_at=m["key_rotated_at"],
    )


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid source name `{name[:80]}`: use 1-64 lower-case letters, digits, `_`, `.` "
            "or `-`, starting with a letter or digit",
            field="name",
            reason="invalid_value",
        )


def add_source(
    engine: Engine, name: str, *, kind: str, write_key: str | None = None
) -> NewSourceKey:
    """Create a source and its first write key (random unless `write_key` is given)."""
    _check_name(name)
    if kind not in SOURCE_KINDS:
        raise InvalidInputError(
            f"invalid source kind `{kind[:40]}`: expected one of {', '.join(SOURCE_KINDS)}",
            field="kind",
            reason="invalid_value",
        )
    key = write_key or _new_key()
    if len(key) < 16:
        raise InvalidInputError(
            "write key too short: use at least 16 characters", field="write_key", reason="too_short"
        )
    with begin_write(engine) as conn:  # reads, then writes: take SQLite's write lock first
        if conn.execute(sa.select(sources.c.id).where(sources.c.name == name)).first():
            raise ConflictError(f"source `{name}` exists already: rotate its key instead")
        conn.execute(
            sources.insert().values(
                name=name,
                kind=kind,
                write_key_hash=hash_write_key(key),
                key_hint=key[:7],
                enabled=True,
                created_at=clock.now(),
            )
        )
        row = conn.execute(sa.select(sources).where(sources.c.name == name)).one()
    return NewSourceKey(source=_row_to_source(row), write_key=key)


def ensure_source(engine: Engine, name: str, *, kind: str) -> int:
    """The id of the source `name`, created (without a usable key) when missing; for the
    hub's own writers such as `closedloop-api` and `closedloop-surveys`."""
    try:
        return get_source(engine, name).id
    except NotFoundError:
        try:
            return add_source(engine, name, kind=kind).source.id
        except ConflictError:  # made meanwhile by another request
            return get_source(engine, name).id


def list_sources(engine: Engine) -> list[Source]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sources).order_by(sources.c.name)).all()
    return [_row_to_source(r) for r in rows]


def get_source(engine: Engine, name: str) -> Source:
    with engine.connect() as conn:
        row = conn.execute(sa.select(sources).where(sources.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"no source `{name[:80]}`: see `closedloop sources list`")
    return _row_to_source(row)


def set_source_enabled(engine: Engine, name: str, *, enabled: bool) -> Source:
    with engine.begin() as conn:
        result = conn.execute(
            sources.update().where(sources.c.name == name).values(enabled=enabled)
        )
    if result.rowcount == 0:
        raise NotFoundError(f"no source `{name[:80]}`: see `closedloop sources list`")
    return get_source(engine, name)


def rotate_write_key(engine: Engine, name: str) -> NewSourceKey:
    """Replace a source's write key; the old key stops working at once (and in caches soon)."""
    key = _new_key()
    with engine.begin() as conn:
        result = conn.execute(
            sources.update()
            .where(sources.c.name == name)
            .values(
                write_key_hash=hash_write_key(key), key_hint=key[:7], key_rotated_at=clock.now()
            )
        )
    if result.rowcount == 0:
        raise NotFoundError(f"no source `{name[:80]}`: see `closedloop sources list`")
    return NewSourceKey(source=get_source(engine, name), write_key=key)


class WriteKeyResolver:
    """Finds the enabled source of a write key, caching answers for a few seconds."""

    def __init__(self, engine: Engine, *, cache_seconds: float) -> None:
        self._engine = engine
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Source | None]] = {}
        self._lock = threading.Lock()

    def resolve_cached(self, write_key: str) -> Source | None:
        """Like `resolve` but without touching the store: None when the answer is not cached."""
        with self._lock:
            cached = self._cache.get(hash_write_key(write_key))
        if cached is None or cached[0] <= time.monotonic():
            return None
        return self._check(cached[1])

    def resolve(self, write_key: str) -> Source:
        """Return the source, or raise PermissionDeniedError for an unknown or disabled key."""
        digest = hash_write_key(write_key)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            source = cached[1]
        else:
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(sources).where(sources.c.write_key_hash == digest)
                ).first()
            source = _row_to_source(row) if row is not None else None
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl, source)
        return self._check(source)

    @staticmethod
    def _check(source: Source | None) -> Source:
        if source is None:
            raise PermissionDeniedError(
                "unknown write key: send the source's key as the Basic auth user name "
                "(see `closedloop sources list`)"
            )
        if not source.enabled:
            raise PermissionDeniedError(
                f"source `{source.name}` is disabled: enable it with "
                f"`closedloop sources enable {source.name}`"
            )
        return source

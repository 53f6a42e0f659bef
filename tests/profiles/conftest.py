"""Fixtures of the profile tests: a log to append Segment messages to, processed on demand."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import ingest, profiles
from closedloop.config import IngestSettings, Settings
from closedloop.identity._tables import identities
from closedloop.ingest.log import append
from closedloop.profiles._tables import profiles as profiles_table
from tests.conftest import make_settings

RECEIVED = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
_LIMITS = IngestSettings()


def readable(engine: Engine) -> None:
    """PostgreSQL: wait (up to 30 s) until the processor can read every committed event. An
    event waits while a transaction older than its own is open anywhere in the cluster:
    autovacuum's analyze holds one for a moment, and so does a test run next door. Tests
    that drive batches themselves count on the events being there."""
    if engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + 30
    while profiles.lag(engine).held and time.monotonic() < deadline:
        time.sleep(0.01)


@dataclass
class Log:
    """Append messages to the event log from named sources; process them."""

    engine: Engine
    settings: Settings
    sources: dict[str, int] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def source(self, name: str, kind: str = "web") -> int:
        if name not in self.sources:
            self.sources[name] = ingest.add_source(self.engine, name, kind=kind).source.id
        return self.sources[name]

    def send(
        self, *messages: dict[str, Any], source: str = "web", kind: str = "web", wait: bool = True
    ) -> None:
        """Append `messages`; with `wait`, return once the processor can read them (below)."""
        source_id = self.source(source, kind)
        rows = []
        for message in messages:
            message = {"messageId": str(uuid.uuid4()), **message}
            row = ingest.normalise_message(
                message, call_type=None, limits=_LIMITS, received_at=RECEIVED, sent_at=None
            )
            rows.append(row.as_tuple(source_id))
        with self.engine.begin() as conn:
            append(conn, rows)
        if wait:
            readable(self.engine)

    def process(self) -> int:
        """Process every event sent so far; how many were processed here. On PostgreSQL an
        event waits while a transaction older than its own is open anywhere in the cluster
        (autovacuum's analyze, a test next door): waited for up to 30 s."""
        return profiles.process_through(self.engine, self.settings, timeout=30)

    def profile_of(self, kind: str, value: str) -> str | None:
        prefix = {"user_id": "u:", "anonymous_id": "a:", "email": "e:", "phone": "p:"}[kind]
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(identities.c.profile_id).where(identities.c.key == prefix + value)
            ).scalar()

    def live_profiles(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(profiles_table.c.id)
                    .where(profiles_table.c.merged_into.is_(None))
                    .order_by(profiles_table.c.id)
                ).scalars()
            )


@pytest.fixture
def log(engine: Engine, db_url: str) -> Log:
    return Log(engine, make_settings(db_url))


def identify(
    user_id: str | None = None, anonymous_id: str | None = None, **traits: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "identify",
        "traits": traits,
        "timestamp": "2026-11-22T10:00:00Z",
    }
    if user_id is not None:
        message["userId"] = user_id
    if anonymous_id is not None:
        message["anonymousId"] = anonymous_id
    return message


def track(
    event: str, user_id: str | None = None, anonymous_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "event": event,
        "timestamp": "2026-11-22T10:00:00Z",
        **fields,
    }
    if user_id is not None:
        message["userId"] = user_id
    if anonymous_id is not None:
        message["anonymousId"] = anonymous_id
    return message


class Held(threading.Event):
    """Set it to end the held transaction; `pid` is its session's."""

    pid: int = 0


@contextmanager
def held_open(log: Log, *, application: str = "held-open") -> Iterator[Held]:
    """PostgreSQL: a transaction with an id open in a thread of its own, as a long
    transaction elsewhere in the cluster would be, until the event the block gets is set
    or the block ends (the event also tells the session's `pid`)."""
    if log.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no event waits for another transaction")
    held, release = threading.Event(), Held()

    def hold() -> None:
        with log.engine.connect() as other:
            other.exec_driver_sql(
                "SELECT set_config('application_name', %s, false)", (application,)
            )
            release.pid = other.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            other.commit()
            other.exec_driver_sql("SELECT pg_current_xact_id()")
            held.set()
            release.wait(timeout=30)
            other.rollback()
            other.exec_driver_sql("RESET application_name")
            other.commit()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(timeout=30)
        yield release
    finally:
        release.set()
        thread.join(timeout=30)

"""Small helpers shared by tests."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.ingest._tables import events, failed_events


def basic(write_key: str) -> dict[str, str]:
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def track(**fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "event": "Article Rated",
        "userId": "user-1",
        "messageId": str(uuid.uuid4()),
        "timestamp": "2026-11-22T10:50:31.543+00:00",
        "properties": {"rating": 4},
    }
    message.update(fields)
    return message


def stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events).order_by(events.c.id)).mappings().all()
    return [dict(r) for r in rows]


def failed(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(failed_events).order_by(failed_events.c.id)).mappings().all()
    return [dict(r) for r in rows]


def query_plan(conn: sa.Connection, query: Any) -> str:
    """The backend's plan of `query` (its values inlined) as one line: SQLite's `EXPLAIN
    QUERY PLAN` details, PostgreSQL's `EXPLAIN` lines."""
    sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    explain = "EXPLAIN " if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    return " ".join(str(row[-1]) for row in conn.exec_driver_sql(explain + sql))

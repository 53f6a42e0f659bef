"""Statements run on the driver itself, for hot paths: `executemany` over plain tuples and
cursors that return plain tuples, with no SQLAlchemy parameter or row processing.

One SQL text serves both backends, written in SQLite's style: `?` a value, `?j` a JSON
document, `::t` a JSON column read as text. Static text only: every value is bound.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from closedloop.store._types import to_epoch_us

__all__ = ["driver_time", "fetch_all", "native_sql"]


def native_sql(statement: str, *, pg: bool) -> str:
    """`statement` in the backend's own SQL (`%s` placeholders and casts on PostgreSQL)."""
    if pg:
        return statement.replace("::t", "::text").replace("?j", "%s::jsonb").replace("?", "%s")
    return statement.replace("::t", "").replace("?j", "?")


def driver_time(value: datetime, *, pg: bool) -> Any:
    """A time as the driver binds it into a `UTCDateTime` column (epoch µs on SQLite)."""
    return value if pg else to_epoch_us(value)


def fetch_all(conn: sa.Connection, statement: str, params: tuple[Any, ...]) -> list[Any]:
    """Every row of `statement` as plain tuples, on the driver's cursor in `conn`'s
    transaction."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()

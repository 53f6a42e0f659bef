"""Definitions stored by name (feeds, surveys): one way to create or replace them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from closedloop import clock
from closedloop.errors import ConflictError, NotFoundError

__all__ = ["store_definition"]


def store_definition(
    conn: sa.Connection,
    table: sa.Table,
    name: str,
    document: dict[str, Any],
    *,
    create: bool | None,
    kind: str,
    limit: int,
    on_change: dict[str, Any] | None = None,
) -> bool:
    """Create (`create=True`), replace (`False`) or either (`None`) the row `name` of `table`
    (columns name, definition, created_at, updated_at); `on_change` are further values set
    when it is replaced. Answers whether it existed."""
    now = clock.now()
    exists = conn.execute(sa.select(table.c.name).where(table.c.name == name)).first()
    if create is True and exists:
        raise ConflictError(f"{kind} `{name}` exists already: change it with PUT")
    if create is False and not exists:
        raise NotFoundError(f"no {kind} `{name}`: create it with POST /v1/{kind}s")
    if exists:
        conn.execute(
            table.update()
            .where(table.c.name == name)
            .values(definition=document, updated_at=now, **(on_change or {}))
        )
        return True
    count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    if count >= limit:
        raise ConflictError(f"at most {limit} {kind}s")
    conn.execute(
        table.insert().values(name=name, definition=document, created_at=now, updated_at=now)
    )
    return False

"""Event tallies: per profile, track event name and facet, the count and the newest times
(`closedloop.profiles.tallies`), filled from the events the processor has applied so far.

The fill reads every processed track event once, with its profile, in profile order (a
sort of the log's track events: about a minute per 10M events on a small machine), while
holding the processor's cursor, so no batch runs meanwhile; the processor keeps the rows
from the next batch on.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from closedloop.profiles.tallies import MAX_TEXT, RECENT, TALLIED_PROPERTIES, facet, newest

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_PAGE = 5000
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_SELECT = """
SELECT i.profile_id, e.event, {time}, {properties}
FROM events e
JOIN identities i ON i.key = CASE WHEN e.user_id IS NOT NULL THEN 'u:' || e.user_id
                                  ELSE 'a:' || e.anonymous_id END
WHERE e.type = 'track' AND e.event IS NOT NULL AND e.event <> ''
  AND length(e.event) <= :longest AND {processed}
ORDER BY i.profile_id, e.event
"""


def upgrade() -> None:
    op.create_table(
        "event_tallies",
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("facet", sa.Text(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("recent", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("profile_id", "event", "facet", name="pk_event_tallies"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_event_tallies_event", "event_tallies", ["event", "facet", "total", "recent"]
    )
    _fill(op.get_bind())


def _fill(conn: sa.Connection) -> None:
    pg = conn.dialect.name == "postgresql"
    # PostgreSQL: hold the processor's cursor (its batches lock it too) until this commits.
    query = "SELECT txid, event_id FROM processor_cursors WHERE name = 'main'"
    cursor = conn.execute(sa.text(query + (" FOR UPDATE" if pg else ""))).first()
    if cursor is None:
        return
    if pg:
        time = "(extract(epoch FROM e.timestamp) * 1000000)::bigint"
        processed = "(e.txid, e.id) <= (:txid, :event_id)"
        # each property as `jsonb`: psycopg gives its Python value (None when absent)
        properties = ", ".join(f"e.payload #> '{{properties,{p}}}'" for p in TALLIED_PROPERTIES)
    else:
        time = "e.timestamp"
        processed = "e.id <= :event_id"
        properties = ", ".join(
            f"json_type(e.payload, '$.properties.{p}'), json_extract(e.payload, '$.properties.{p}')"
            for p in TALLIED_PROPERTIES
        )
    insert = sa.text(
        "INSERT INTO event_tallies (profile_id, event, facet, total, recent) "
        "VALUES (:pid, :event, :facet, :total, :recent)"
    ).bindparams(sa.bindparam("recent", type_=_JSON))
    rows: list[dict[str, Any]] = []
    current: tuple[str, str] | None = None
    found: dict[str, list[Any]] = {}  # facet -> [total, times] of the current (profile, event)

    def done() -> None:
        if current is not None:
            for kind, (total, times) in found.items():
                rows.append(
                    {
                        "pid": current[0],
                        "event": current[1],
                        "facet": kind,
                        "total": total,
                        "recent": newest(times),
                    }
                )

    result = conn.execute(
        sa.text(_SELECT.format(time=time, processed=processed, properties=properties)),
        {"txid": cursor.txid, "event_id": cursor.event_id, "longest": MAX_TEXT},
        execution_options={"stream_results": True, "yield_per": _PAGE},
    )
    for pid, event, at, *values in result:
        if (pid, event) != current:
            done()
            if len(rows) >= _PAGE:
                conn.execute(insert, rows)
                rows = []
            current, found = (pid, event), {}
        kinds = [""]
        for n, name in enumerate(TALLIED_PROPERTIES):
            # PostgreSQL: psycopg's value of the `jsonb` (None when absent or null)
            value = (
                (_ABSENT if values[n] is None else values[n])
                if pg
                else _sqlite_value(*values[2 * n : 2 * n + 2])
            )
            if value is not _ABSENT and (kind := facet(name, value)) is not None:
                kinds.append(kind)
        for kind in kinds:
            entry = found.setdefault(kind, [0, []])
            entry[0] += 1
            entry[1].append(at)
            if len(entry[1]) > 4 * RECENT:
                entry[1] = newest(entry[1])
    done()
    if rows:
        conn.execute(insert, rows)


_ABSENT = object()


def _sqlite_value(kind: str | None, value: Any) -> Any:
    """SQLite: the property from `json_type` and `json_extract` (true is 1 there)."""
    if kind is None or kind == "null":
        return _ABSENT
    if kind in ("true", "false"):
        return kind == "true"
    if kind in ("integer", "real", "text"):
        return value
    return _ABSENT  # an array or object: not tallied


def downgrade() -> None:
    op.drop_index("ix_event_tallies_event", table_name="event_tallies")
    op.drop_table("event_tallies")

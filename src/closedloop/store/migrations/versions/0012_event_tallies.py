"""Event tallies: per profile and track event name, the count and the newest times
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

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

RECENT = 10  # closedloop.profiles.tallies.RECENT when this revision was written
_PAGE = 5000
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_SELECT = """
SELECT i.profile_id, e.event, {time}
FROM events e
JOIN identities i ON i.key = CASE WHEN e.user_id IS NOT NULL THEN 'u:' || e.user_id
                                  ELSE 'a:' || e.anonymous_id END
WHERE e.type = 'track' AND e.event IS NOT NULL AND e.event <> '' AND {processed}
ORDER BY i.profile_id, e.event
"""


def upgrade() -> None:
    op.create_table(
        "event_tallies",
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("recent", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("profile_id", "event", name="pk_event_tallies"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_event_tallies_event", "event_tallies", ["event", "total", "recent"])
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
    else:
        time = "e.timestamp"
        processed = "e.id <= :event_id"
    insert = sa.text(
        "INSERT INTO event_tallies (profile_id, event, total, recent) "
        "VALUES (:pid, :event, :total, :recent)"
    )
    insert = insert.bindparams(sa.bindparam("recent", type_=_JSON))
    rows: list[dict[str, Any]] = []
    current: tuple[str, str] | None = None
    total, times = 0, list[int]()

    def done() -> None:
        if current is not None:
            recent = sorted(times, reverse=True)[:RECENT]
            rows.append({"pid": current[0], "event": current[1], "total": total, "recent": recent})

    result = conn.execute(
        sa.text(_SELECT.format(time=time, processed=processed)),
        {"txid": cursor.txid, "event_id": cursor.event_id},
        execution_options={"stream_results": True, "yield_per": _PAGE},
    )
    for pid, event, at in result:
        if (pid, event) != current:
            done()
            if len(rows) >= _PAGE:
                conn.execute(insert, rows)
                rows = []
            current, total, times = (pid, event), 0, []
        total += 1
        times.append(at)
        if len(times) > 4 * RECENT:
            times = sorted(times, reverse=True)[:RECENT]
    done()
    if rows:
        conn.execute(insert, rows)


def downgrade() -> None:
    op.drop_index("ix_event_tallies_event", table_name="event_tallies")
    op.drop_table("event_tallies")

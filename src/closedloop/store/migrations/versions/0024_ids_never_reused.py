"""SQLite never gives an id again: `events` and `segment_changes` with AUTOINCREMENT.

Cursors follow the ids of both tables (the processor and the survey engine the events', the
survey engine and the segment history's index the changes'). SQLite gives a new row the
largest id in the table plus one, so where the newest rows were deleted (an erasure, or the
processor dropping an erased person's events) the next rows took their ids again, behind
the cursors: never processed, and an erased person's events sent again stayed in the log.
With AUTOINCREMENT an id is never given twice. Each table is rebuilt (SQLite adds the
keyword only at CREATE TABLE), and its sequence starts above its largest id and above every
cursor that follows it, so rows already given a used id keep no later one behind a cursor.
PostgreSQL's sequences never give an id twice: nothing to do there.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

# Each table, and where its sequence starts: above its largest id and above each cursor
# (`processor_cursors`) that follows its ids.
_STARTS = {
    "events": (
        "SELECT max(coalesce((SELECT max(id) FROM events), 0), "
        "coalesce((SELECT max(event_id) FROM processor_cursors "
        "WHERE name IN ('main', 'surveys')), 0))"
    ),
    "segment_changes": (
        "SELECT max(coalesce((SELECT max(id) FROM segment_changes), 0), "
        "coalesce((SELECT max(event_id) FROM processor_cursors "
        "WHERE name IN ('surveys_entries', 'segment_changes')), 0))"
    ),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=True)
    conn = op.get_bind()
    for table, start in _STARTS.items():
        highest = conn.exec_driver_sql(start).scalar_one()
        moved = conn.execute(
            sa.text("UPDATE sqlite_sequence SET seq = :seq WHERE name = :name"),
            {"seq": highest, "name": table},
        ).rowcount
        if not moved:
            conn.execute(
                sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"),
                {"seq": highest, "name": table},
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(autoincrement=False)


def _rebuild(*, autoincrement: bool) -> None:
    for table in _STARTS:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass

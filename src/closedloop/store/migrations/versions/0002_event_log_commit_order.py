"""The event log in commit order: a transaction id per event on PostgreSQL.

A `bigserial` id is taken at insert, not at commit, so a reader of `id > checkpoint` skips
an event whose transaction commits after a later one's (shared/notes/scale-out.md). On
PostgreSQL each event now carries the id of the transaction that wrote it; readers take only
events of transactions older than every open one and order by (txid, id). SQLite has one
writer at a time, so id order is commit order and the column stays empty there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(
            "events",
            sa.Column(
                "txid",
                sa.BigInteger(),
                nullable=False,
                server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            ),
        )
        op.create_index("ix_events_txid_id", "events", ["txid", "id"])
    else:
        with op.batch_alter_table("events") as batch:
            batch.add_column(sa.Column("txid", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_events_txid_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("txid")

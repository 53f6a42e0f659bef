"""Segment changes in commit order on PostgreSQL: a transaction id per change.

The survey engine follows the changes by a cursor (segment-entry surveys). A `bigserial` id
is taken at insert, not at commit: where two writers recorded changes at once (a refresh in
each of two workers, or one beside an API change of a segment), the one that took the lower
ids could commit last, after the engine had read past them, and those customers' entries
were never seen. Each change now carries the id of the transaction that wrote it, and the
engine reads only changes of transactions older than every open one, by (txid, id), as the
processor reads the events (migration 0002). SQLite has one writer at a time: the column
stays empty there.

The changes recorded before get 0, so the cursor (0, its last id) still stands where it
stood: the older changes after it come first, then every new one.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # A constant default fills the existing rows without rewriting the table; the
        # transaction's id is the default from here on.
        op.add_column(
            "segment_changes",
            sa.Column("txid", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        )
        op.alter_column(
            "segment_changes",
            "txid",
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
        )
        op.create_index("ix_segment_changes_txid_id", "segment_changes", ["txid", "id"])
    else:
        op.add_column("segment_changes", sa.Column("txid", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_segment_changes_txid_id", table_name="segment_changes")
    with op.batch_alter_table("segment_changes") as batch:
        batch.drop_column("txid")

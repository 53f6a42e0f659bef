"""SQLite: a segment change's profile indexed in batches, not with every refresh.

An index on `segment_changes.profile_id` made each entry and exit a random page of a B-tree
as large as the whole history: a third of an incremental refresh's writes (docs/benchmarks.md,
2026-12-06). On SQLite it is replaced by `segment_changes_by_profile (profile_id, change_id)`,
which `closedloop.segments.history.index_changes` fills in profile order up to a mark (the
`segment_changes` row of `processor_cursors`); readers of a person's history walk the changes
past the mark (ADR 0016). The upgrade fills it with every change there is.

PostgreSQL keeps its index (concurrent refreshes commit change ids out of order, so a mark
could pass one not yet visible); the new table stays empty there.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_changes_by_profile",
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("profile_id", "change_id", name="pk_segment_changes_by_profile"),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO segment_changes_by_profile (profile_id, change_id) "
        "SELECT profile_id, id FROM segment_changes ORDER BY profile_id, id"
    )
    op.execute(
        "INSERT INTO processor_cursors (name, txid, event_id, seq) "
        "SELECT 'segment_changes', 0, coalesce(max(id), 0), 0 FROM segment_changes"
    )
    op.drop_index("ix_segment_changes_profile_id", table_name="segment_changes")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_segment_changes_profile_id", "segment_changes", ["profile_id"])
        op.execute("DELETE FROM processor_cursors WHERE name = 'segment_changes'")
    op.drop_table("segment_changes_by_profile")

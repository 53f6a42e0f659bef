"""Mood conditions as index ranges: expression indexes on the numbers the processor keeps in
each profile's derived document (`mood_k`, `mood_last`, `mood_churn`), and the basis they
were computed with (`closedloop.mood.index`); the index of merged profiles only.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from closedloop.store._types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The expressions must be the ones `closedloop.mood.index.number` compiles, character for
# character on SQLite (its planner matches indexed expressions literally). `merged_into`
# rides along so that a count of live profiles in a range never reads the table rows.
_SQLITE = {
    "ix_profiles_mood_k": "json_extract(derived, '$.mood_k'), merged_into",
    "ix_profiles_mood_last": "json_extract(derived, '$.mood_last')",
    "ix_profiles_mood_churn": "json_extract(derived, '$.mood_churn'), merged_into",
}
_POSTGRES = {
    "ix_profiles_mood_k": "((derived ->> 'mood_k')::double precision), merged_into",
    "ix_profiles_mood_last": "((derived ->> 'mood_last')::bigint)",
    "ix_profiles_mood_churn": "((derived ->> 'mood_churn')::bigint), merged_into",
}


def upgrade() -> None:
    op.create_table(
        "mood_basis",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("anchor_us", sa.BigInteger(), nullable=False),
        sa.Column("half_life_days", sa.Float(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mood_basis"),
    )
    pg = op.get_bind().dialect.name == "postgresql"
    for name, expression in (_POSTGRES if pg else _SQLITE).items():
        op.execute(f"CREATE INDEX {name} ON profiles ({expression})")
    # Nearly every profile has no `merged_into`: SQLite's statistics count the NULLs as one
    # value of a million rows and stop using the index for `merged_into = ?` (a scan of the
    # profiles on every profile page). Index only the merged ones.
    op.drop_index("ix_profiles_merged_into", table_name="profiles")
    op.create_index(
        "ix_profiles_merged_into",
        "profiles",
        ["merged_into"],
        sqlite_where=sa.text("merged_into IS NOT NULL"),
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_profiles_merged_into", table_name="profiles")
    op.create_index("ix_profiles_merged_into", "profiles", ["merged_into"])
    for name in _SQLITE:
        op.drop_index(name, table_name="profiles")
    op.drop_table("mood_basis")

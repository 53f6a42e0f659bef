"""Mood conditions as index ranges: expression indexes on the numbers the processor keeps in
each profile's derived document (`mood_k`, `mood_last`, `mood_churn`), and the basis they
were computed with (`closedloop.mood.index`).

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

# The expressions must be the ones `closedloop.mood.index` compiles, character for
# character on SQLite (its planner matches indexed expressions literally).
_SQLITE = {
    "ix_profiles_mood_k": "json_extract(derived, '$.mood_k')",
    "ix_profiles_mood_last": "json_extract(derived, '$.mood_last')",
    "ix_profiles_mood_churn": "json_extract(derived, '$.mood_churn')",
}
_POSTGRES = {
    "ix_profiles_mood_k": "((derived ->> 'mood_k')::double precision)",
    "ix_profiles_mood_last": "((derived ->> 'mood_last')::bigint)",
    "ix_profiles_mood_churn": "((derived ->> 'mood_churn')::bigint)",
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


def downgrade() -> None:
    for name in _SQLITE:
        op.drop_index(name, table_name="profiles")
    op.drop_table("mood_basis")

"""Mood rules, versioned.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from closedloop.store._types import JSONDocument, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mood_rules",
        sa.Column("version", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("document", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_mood_rules"),
    )


def downgrade() -> None:
    op.drop_table("mood_rules")

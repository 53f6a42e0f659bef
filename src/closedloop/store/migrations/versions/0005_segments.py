"""Segments, their members, entries and exits, sizes; the shipped segments.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from closedloop import clock
from closedloop.store._types import JSONDocument, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_SHIPPED = [
    ("positive", "mood is positive", {"mood": "positive"}),
    ("negative", "mood is negative", {"mood": "negative"}),
    ("churn-risk", "churn risk", {"churn_risk": True}),
    (
        "promoters",
        "latest nps >= 9 within 90 days",
        {"latest_nps": {"op": ">=", "value": 9, "within_days": 90}},
    ),
    (
        "detractors",
        "latest nps <= 6 within 90 days",
        {"latest_nps": {"op": "<=", "value": 6, "within_days": 90}},
    ),
]


def upgrade() -> None:
    table = op.create_table(
        "segments",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("tree", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("refreshed_at", UTCDateTime(), nullable=True),
        sa.Column("refreshed_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_segments"),
    )
    op.create_table(
        "segment_members",
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("segment", "profile_id", name="pk_segment_members"),
    )
    op.create_table(
        "segment_changes",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_segment_changes"),
    )
    op.create_index("ix_segment_changes_segment", "segment_changes", ["segment"])
    op.create_index("ix_segment_changes_profile_id", "segment_changes", ["profile_id"])
    op.create_table(
        "segment_sizes",
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("segment", "at", name="pk_segment_sizes"),
    )
    now = clock.now()
    op.bulk_insert(
        table,
        [
            {"name": n, "condition": c, "tree": t, "created_at": now, "updated_at": now}
            for n, c, t in _SHIPPED
        ],
    )


def downgrade() -> None:
    for name in ("segment_sizes", "segment_changes", "segment_members", "segments"):
        op.drop_table(name)

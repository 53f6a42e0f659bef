"""Feeds, their runs and what delta feeds delivered; the two demo feeds.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from closedloop import clock
from closedloop.feeds.shipped import SHIPPED_FEEDS
from closedloop.store._types import JSONDocument, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "feeds",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("definition", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("next_run_at", UTCDateTime(), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("delta_run", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_feeds"),
    )
    op.create_table(
        "feed_runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("run_key", sa.String(80), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("file_name", sa.String(255), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("stats", JSONDocument, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_feed_runs"),
        sa.UniqueConstraint("feed", "run_key", name="uq_feed_runs_feed_run_key"),
    )
    op.create_index("ix_feed_runs_feed_created", "feed_runs", ["feed", "created_at"])
    op.create_table(
        "feed_rows",
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("row_key", sa.String(255), nullable=False),
        sa.Column("row_hash", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("feed", "run_id", "profile_id", name="pk_feed_rows"),
    )
    now = clock.now()
    op.bulk_insert(
        table,
        [
            {
                "name": feed["name"],
                "definition": feed,
                "created_at": now,
                "updated_at": now,
                "next_run_at": None,
            }
            for feed in SHIPPED_FEEDS
        ],
    )


def downgrade() -> None:
    for name in ("feed_rows", "feed_runs", "feeds"):
        op.drop_table(name)

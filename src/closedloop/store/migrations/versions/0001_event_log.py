"""Sources, the event log and failed events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from closedloop.store._types import JSONDocument, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("write_key_hash", sa.String(64), nullable=False),
        sa.Column("key_hint", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("key_rotated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sources"),
        sa.UniqueConstraint("name", name="uq_sources_name"),
        sa.UniqueConstraint("write_key_hash", name="uq_sources_write_key_hash"),
    )
    op.create_table(
        "events",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(100), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("anonymous_id", sa.String(255), nullable=True),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("original_timestamp", UTCDateTime(), nullable=True),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONDocument, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("source_id", "message_id", name="uq_events_source_id_message_id"),
    )
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.create_index("ix_events_anonymous_id", "events", ["anonymous_id"])
    op.create_table(
        "failed_events",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("message_id", sa.String(300), nullable=True),
        sa.Column("field", sa.String(300), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("payload_truncated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_failed_events"),
    )
    op.create_index("ix_failed_events_received_at", "failed_events", ["received_at"])


def downgrade() -> None:
    op.drop_table("failed_events")
    op.drop_index("ix_events_anonymous_id", table_name="events")
    op.drop_index("ix_events_user_id", table_name="events")
    op.drop_table("events")
    op.drop_table("sources")

"""Tables of the ingest domain (created by migration 0001)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import JSONDocument, UTCDateTime, metadata

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("write_key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_hint", sa.String(16), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("key_rotated_at", UTCDateTime(), nullable=True),
)

events = sa.Table(
    "events",
    metadata,
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
    # PostgreSQL: the writing transaction's id (server default), for reading in commit order;
    # SQLite: empty (one writer at a time, so id order is commit order). Migration 0002.
    sa.Column("txid", sa.BigInteger(), nullable=True),
    sa.UniqueConstraint("source_id", "message_id"),
    # A customer's events newest first, by each of her ids (migration 0010).
    sa.Index("ix_events_user_id_id", "user_id", "id"),
    sa.Index("ix_events_anonymous_id_id", "anonymous_id", "id"),
    # SQLite: an id is never given twice, even after the newest rows were deleted; cursors
    # follow the ids (migration 0024).
    sqlite_autoincrement=True,
)

failed_events = sa.Table(
    "failed_events",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("source_id", sa.Integer(), nullable=True),
    sa.Column("origin", sa.String(300), nullable=False),
    sa.Column("message_id", sa.String(300), nullable=True),
    sa.Column("field", sa.String(300), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=True),
    sa.Column("payload_truncated", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("received_at", UTCDateTime(), nullable=False, index=True),
)

# The column order of the fast append path (`log.append`); the tuples in `EventRow` follow it.
EVENT_COLUMNS = (
    "source_id",
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "payload",
)
FAILED_COLUMNS = (
    "source_id",
    "origin",
    "message_id",
    "field",
    "reason",
    "payload",
    "payload_truncated",
    "received_at",
)

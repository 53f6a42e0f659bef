"""Tables of the segments domain (created by migration 0005)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import JSONDocument, UTCDateTime, metadata

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("condition", sa.Text(), nullable=False),
    sa.Column("tree", JSONDocument, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("refreshed_at", UTCDateTime(), nullable=True),
    sa.Column("refreshed_seq", sa.BigInteger(), nullable=True),
    # How many rows `segment_members` holds for it, kept with every change (migration 0013).
    sa.Column("members", sa.BigInteger(), nullable=False, server_default="0"),
)

# Who is in a segment now, since when; keyed by profile (migration 0020: on SQLite one B-tree,
# a segment's members a walk of it in profile order; PostgreSQL also has an index by segment,
# migration 0015).
segment_members = sa.Table(
    "segment_members",
    metadata,
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("segment", sa.String(64), nullable=False),
    sa.Column("entered_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("profile_id", "segment", name="pk_segment_members"),
    sqlite_with_rowid=False,
)

# Every entry and exit, for history and for delta feeds.
segment_changes = sa.Table(
    "segment_changes",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("segment", sa.String(64), nullable=False, index=True),
    # (indexed on PostgreSQL; on SQLite through `segment_changes_by_profile`, migration 0021)
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("change", sa.String(8), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    # PostgreSQL: the writing transaction's id (server default), so the survey engine reads
    # the changes in commit order, as the processor reads the events; SQLite: empty (one
    # writer at a time). Migration 0025.
    sa.Column("txid", sa.BigInteger(), nullable=True),
    # SQLite: an id is never given twice, even after the newest rows were deleted; cursors
    # follow the ids (migration 0024).
    sqlite_autoincrement=True,
)

# SQLite: each change's profile, filled in batches up to a mark (`segments.history`, ADR
# 0016); empty on PostgreSQL, whose `segment_changes.profile_id` is indexed.
segment_changes_by_profile = sa.Table(
    "segment_changes_by_profile",
    metadata,
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("change_id", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("profile_id", "change_id", name="pk_segment_changes_by_profile"),
    sqlite_with_rowid=False,
)

# The size of each segment at each refresh that changed it.
segment_sizes = sa.Table(
    "segment_sizes",
    metadata,
    sa.Column("segment", sa.String(64), primary_key=True),
    sa.Column("at", UTCDateTime(), primary_key=True),
    sa.Column("size", sa.Integer(), nullable=False),
)

# Customers by mood label, counted at each full segment refresh (the overview shows the
# newest; the rows make the mood trend).
mood_sizes = sa.Table(
    "mood_sizes",
    metadata,
    sa.Column("at", UTCDateTime(), primary_key=True),
    sa.Column("positive", sa.Integer(), nullable=False),
    sa.Column("neutral", sa.Integer(), nullable=False),
    sa.Column("negative", sa.Integer(), nullable=False),
)

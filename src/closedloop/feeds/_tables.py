"""Tables of the feeds domain (created by migration 0006)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import JSONDocument, UTCDateTime, metadata

# A feed's definition, its next scheduled run and its lease: the worker holding an unexpired
# lease is the only one running the feed.
feeds = sa.Table(
    "feeds",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("definition", JSONDocument, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("next_run_at", UTCDateTime(), nullable=True),
    sa.Column("lease_token", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    # The last successful delta run: its rows in `feed_rows` are what the recipient holds.
    sa.Column("delta_run", sa.String(40), nullable=True),
)

# Every run: queued by the schedule or by hand, run once (a crashed run is taken over with
# the same id and file name).
feed_runs = sa.Table(
    "feed_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
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
    sa.UniqueConstraint("feed", "run_key", name="uq_feed_runs_feed_run_key"),
    sa.Index("ix_feed_runs_feed_created", "feed", "created_at"),
)

# What a delta feed delivered: per run, each exported profile's key and a hash of its row.
# The next delta run compares against the rows of the feed's last successful run.
feed_rows = sa.Table(
    "feed_rows",
    metadata,
    sa.Column("feed", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("row_key", sa.String(255), nullable=False),
    sa.Column("row_hash", sa.String(32), nullable=False),
)

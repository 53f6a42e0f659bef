"""Tables of the profiles domain (created by migration 0003)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import JSONDocument, UTCDateTime, metadata

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The numbers of a profile's `derived` document a `profile_writes` row carries, by the path
# segment conditions read them at (`closedloop.mood.index.number`,
# `closedloop.segments.compile.nps_number`) and the log's column.
WRITTEN_NUMBERS = {
    "$.mood_k": "mood_k",
    "$.mood_last": "mood_last",
    "$.mood_churn": "mood_churn",
    "$.nps[0]": "nps_score",
    "$.nps[1]": "nps_at",
}

# One row per profile. A merged profile keeps its row with `merged_into` set (so its old id
# still answers) and nothing else. Times inside the JSON documents are epoch microseconds.
profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("merged_into", sa.String(40), nullable=True),
    sa.Column("customer_key", sa.String(80), nullable=True, index=True),
    sa.Column("user_ids", JSONDocument, nullable=False),
    sa.Column("anonymous_ids", sa.Integer(), nullable=False),
    sa.Column("traits", JSONDocument, nullable=False),
    sa.Column("computed", JSONDocument, nullable=False),
    sa.Column("consent", JSONDocument, nullable=False),
    sa.Column("masterdata", JSONDocument, nullable=False),
    sa.Column("quality", JSONDocument, nullable=False),
    sa.Column("derived", JSONDocument, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("created_event_id", sa.BigInteger(), nullable=False),
    # The processor batch that last wrote the row (`processor_cursors.seq`); not indexed:
    # refreshes find the profiles written since their last one in `profile_writes`.
    sa.Column("processed_seq", sa.BigInteger(), nullable=False, server_default="0"),
    # Only merged profiles (migration 0011): the rest are NULL.
    sa.Index(
        "ix_profiles_merged_into",
        "merged_into",
        sqlite_where=sa.text("merged_into IS NOT NULL"),
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    ),
)

# The profiles each processor batch wrote (migration 0019): appended by the processor, read
# by incremental segment refreshes as a range of batches, pruned from the front once every
# segment has been refreshed past them. Each row carries what the shipped segment conditions
# compare, as written: `merged_into` and the numbers of `derived` (`WRITTEN_NUMBERS`).
profile_writes = sa.Table(
    "profile_writes",
    metadata,
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("merged_into", sa.String(40), nullable=True),
    sa.Column("mood_k", sa.Float(), nullable=True),
    sa.Column("mood_last", sa.BigInteger(), nullable=True),
    sa.Column("mood_churn", sa.BigInteger(), nullable=True),
    sa.Column("nps_score", sa.Float(), nullable=True),
    sa.Column("nps_at", sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint("seq", "profile_id", name="pk_profile_writes"),
    sqlite_with_rowid=False,
)

# Every consent statement that changed a purpose, oldest first: the consent history.
consent_changes = sa.Table(
    "consent_changes",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("granted", sa.Boolean(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("event_id", sa.BigInteger(), nullable=False),
)

# The processor's row of `processor_cursors` (the survey engine and the segment history
# keep rows of their own there).
MAIN_CURSOR = "main"

# Where each reader of the event log stands; the processor's row is `main`. Written in the
# same transaction as what it derived, and locked for the batch (one processor at a time).
processor_cursors = sa.Table(
    "processor_cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("txid", sa.BigInteger(), nullable=False),
    sa.Column("event_id", sa.BigInteger(), nullable=False),
    # Bumped by every batch and by anything else that changes derived state (rebuild): a
    # processor keeps its in-memory states only while the sequence is the one it wrote.
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
)

# The events applied to a profile that their ids do not lead to: an event without a user
# id, joined by its e-mail or phone, whose anonymous id another customer holds (a shared
# device) or the anonymous-id limit refused. A timeline, an erasure and a subject export
# take these besides the events of the person's ids (migration 0026). Kept by the processor;
# a merge moves them to the survivor.
event_attributions = sa.Table(
    "event_attributions",
    metadata,
    sa.Column("event_id", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
)

# Per live profile, track event name and facet: how many such events the profile has, the
# times of the newest `tallies.RECENT` of them (epoch microseconds, newest first). Kept by
# the processor (migration 0012 filled it from the log): `did "X" at least N times within D
# days` is then one row per profile, `recent[N-1] >= now - D`, read from the index by event.
event_tallies = sa.Table(
    "event_tallies",
    metadata,
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("event", sa.Text(), nullable=False),
    # "" for every event of the name; `category=s:Laufschuhe` for those with that property
    # value (`tallies.facet`).
    sa.Column("facet", sa.Text(), nullable=False),
    sa.Column("total", sa.BigInteger(), nullable=False),
    sa.Column("recent", JSONDocument, nullable=False),
    sa.PrimaryKeyConstraint("profile_id", "event", "facet", name="pk_event_tallies"),
    sa.Index("ix_event_tallies_event", "event", "facet", "total", "recent"),
    sqlite_with_rowid=False,
)

"""Tables of the privacy domain (created by migration 0008); `suppressions` is identity's."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import JSONDocument, UTCDateTime, metadata

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# One row per erasure request. `profile_ids` names the cluster only while the erasure runs
# (so an interrupted one resumes); when it is done only the counts per table remain.
privacy_erasures = sa.Table(
    "privacy_erasures",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("identifier_kind", sa.String(16), nullable=False),
    sa.Column("requested_by", sa.String(100), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("profile_ids", JSONDocument, nullable=True),
    sa.Column("counts", JSONDocument, nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
)

# Who did what to personal data, when: never the personal data itself.
privacy_audit = sa.Table(
    "privacy_audit",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(80), nullable=True),
    sa.Column("details", JSONDocument, nullable=False),
)

# Every re-keying of a profile's customer key (`closedloop privacy rotate-key`): feeds with a
# `key_mapping` column deliver the old-to-new pairs once.
customer_key_changes = sa.Table(
    "customer_key_changes",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("old_key", sa.String(80), nullable=False),
    sa.Column("new_key", sa.String(80), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, index=True),
    sa.Column("changed_at", UTCDateTime(), nullable=False),
)

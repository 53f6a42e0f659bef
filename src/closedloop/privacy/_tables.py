"""Tables of the privacy domain (created by migration 0008); `suppressions` and
`customer_key_changes` belong to identity."""

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

"""Tables of the mood domain (created by migration 0004)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import JSONDocument, UTCDateTime, metadata

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Every version of the mood rules; the newest is in force. None stored: the defaults.
mood_rules = sa.Table(
    "mood_rules",
    metadata,
    sa.Column("version", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("document", JSONDocument, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

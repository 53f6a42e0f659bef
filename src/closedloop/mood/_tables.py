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

# The basis of the mood index numbers each profile carries (`closedloop.mood.index`): the
# anchor time and the half-life they were computed with. One row, id 1; none until the
# numbers of every profile were computed once.
mood_basis = sa.Table(
    "mood_basis",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("anchor_us", sa.BigInteger(), nullable=False),
    sa.Column("half_life_days", sa.Float(), nullable=False),
    sa.Column("computed_at", UTCDateTime(), nullable=False),
)

"""Tables of the access domain (created by migration 0008)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import UTCDateTime, metadata

# Admin tokens made with `closedloop tokens add`: only a SHA-256 of each token is kept (they
# are 256-bit random strings, so a fast hash is enough), with its first characters as a hint.
admin_tokens = sa.Table(
    "admin_tokens",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
)

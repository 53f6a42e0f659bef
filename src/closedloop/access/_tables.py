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

# Dashboard users: a name, an argon2 hash of the password, a role (admin, marketer, agent,
# viewer) and the language of the dashboard.
users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("locale", sa.String(8), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_login_at", UTCDateTime(), nullable=True),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
)

# Dashboard sessions: only a SHA-256 of the session cookie's value, the user, the CSRF token
# of its forms, and when it ends.
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(64), nullable=False, index=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

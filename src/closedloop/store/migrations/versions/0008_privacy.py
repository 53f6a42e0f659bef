"""Privacy: suppressed identifiers, erasure requests, the audit log, customer-key changes;
admin tokens kept hashed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from closedloop.store._types import JSONDocument, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("erasure_id", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_suppressions"),
    )
    op.create_table(
        "privacy_erasures",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_privacy_erasures"),
    )
    op.create_index("ix_privacy_erasures_state", "privacy_erasures", ["state"])
    op.create_table(
        "privacy_audit",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(80), nullable=True),
        sa.Column("details", JSONDocument, nullable=False),
    )
    op.create_index("ix_privacy_audit_at", "privacy_audit", ["at"])
    op.create_table(
        "customer_key_changes",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("old_key", sa.String(80), nullable=False),
        sa.Column("new_key", sa.String(80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_customer_key_changes_profile_id", "customer_key_changes", ["profile_id"])
    op.create_index("ix_customer_key_changes_version", "customer_key_changes", ["version"])

    op.create_table(
        "admin_tokens",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_admin_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_admin_tokens_token_hash"),
    )


def downgrade() -> None:
    for table in (
        "admin_tokens",
        "customer_key_changes",
        "privacy_audit",
        "privacy_erasures",
        "suppressions",
    ):
        op.drop_table(table)

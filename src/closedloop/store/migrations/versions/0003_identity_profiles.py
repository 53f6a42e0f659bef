"""Identity graph, profiles, consent history and the processor's cursor.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from closedloop.store._types import JSONDocument, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_identities"),
    )
    op.create_index("ix_identities_profile_id", "identities", ["profile_id"])
    op.create_table(
        "identity_merges",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("survivor_id", sa.String(40), nullable=False),
        sa.Column("merged_id", sa.String(40), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_merges"),
    )
    op.create_index("ix_identity_merges_survivor_id", "identity_merges", ["survivor_id"])
    op.create_index("ix_identity_merges_merged_id", "identity_merges", ["merged_id"])
    op.create_table(
        "identity_conflicts",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("other_profile_id", sa.String(40), nullable=False),
        sa.Column("identity_key", sa.String(300), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("first_event_id", sa.BigInteger(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_conflicts"),
        sa.UniqueConstraint(
            "profile_id",
            "other_profile_id",
            "identity_key",
            "reason",
            name="uq_identity_conflicts_pair",
        ),
    )
    op.create_index("ix_identity_conflicts_profile_id", "identity_conflicts", ["profile_id"])
    op.create_index(
        "ix_identity_conflicts_other_profile_id", "identity_conflicts", ["other_profile_id"]
    )
    op.create_table(
        "profiles",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("merged_into", sa.String(40), nullable=True),
        sa.Column("customer_key", sa.String(80), nullable=True),
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
        sa.Column("processed_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_profiles"),
    )
    op.create_index("ix_profiles_merged_into", "profiles", ["merged_into"])
    op.create_index("ix_profiles_customer_key", "profiles", ["customer_key"])
    op.create_index("ix_profiles_processed_seq", "profiles", ["processed_seq"])
    op.create_table(
        "consent_changes",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consent_changes"),
    )
    op.create_index("ix_consent_changes_profile_id", "consent_changes", ["profile_id"])
    cursors = op.create_table(
        "processor_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_processor_cursors"),
    )
    op.bulk_insert(
        cursors, [{"name": "main", "txid": 0, "event_id": 0, "seq": 0, "updated_at": None}]
    )


def downgrade() -> None:
    for table in (
        "processor_cursors",
        "consent_changes",
        "profiles",
        "identity_conflicts",
        "identity_merges",
        "identities",
    ):
        op.drop_table(table)

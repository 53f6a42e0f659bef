"""Surveys, their invitations, decisions and answers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from closedloop.store._types import JSONDocument, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "surveys",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("definition", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_surveys"),
    )
    op.create_table(
        "survey_invitations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("survey", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("period", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("locale", sa.String(8), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_survey_invitations"),
        sa.UniqueConstraint("survey", "profile_id", "period", name="uq_survey_invitations_period"),
    )
    op.create_index("ix_survey_invitations_profile_id", "survey_invitations", ["profile_id"])
    op.create_index("ix_survey_invitations_due", "survey_invitations", ["state", "due_at"])
    op.create_table(
        "survey_decisions",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("survey", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("invited", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_survey_decisions"),
    )
    op.create_index("ix_survey_decisions_profile", "survey_decisions", ["survey", "profile_id"])
    op.create_table(
        "survey_answers",
        sa.Column("invitation_id", sa.String(40), nullable=False),
        sa.Column("survey", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("invitation_id", name="pk_survey_answers"),
    )
    op.create_index("ix_survey_answers_survey", "survey_answers", ["survey"])


def downgrade() -> None:
    for name in ("survey_answers", "survey_decisions", "survey_invitations", "surveys"):
        op.drop_table(name)

"""Tables of the surveys domain (created by migration 0007)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import JSONDocument, UTCDateTime, metadata

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

surveys = sa.Table(
    "surveys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("definition", JSONDocument, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# One invitation per survey, person and period (the interval's bucket of the due day): two
# evaluations of the same trigger, in one worker or two, make one invitation.
survey_invitations = sa.Table(
    "survey_invitations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("survey", sa.String(64), nullable=False),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("period", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("locale", sa.String(8), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.UniqueConstraint("survey", "profile_id", "period", name="uq_survey_invitations_period"),
    sa.Index("ix_survey_invitations_due", "state", "due_at"),
)

# Every decision with its reason: why a customer was or was not surveyed.
survey_decisions = sa.Table(
    "survey_decisions",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("survey", sa.String(64), nullable=False),
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.BigInteger(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("invited", sa.Boolean(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=True),
    sa.Index("ix_survey_decisions_profile", "survey", "profile_id"),
)

# One answer per invitation; answering again within the token's validity updates it.
survey_answers = sa.Table(
    "survey_answers",
    metadata,
    sa.Column("invitation_id", sa.String(40), primary_key=True),
    sa.Column("survey", sa.String(64), nullable=False, index=True),
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("score", sa.Integer(), nullable=False),
    sa.Column("comment", sa.Text(), nullable=True),
    sa.Column("answered_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

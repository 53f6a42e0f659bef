"""The event log's id indexes carry the event id: a customer's timeline is an index range
per identifier, newest first, whatever the planner's statistics say.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_user_id_id", "events", ["user_id", "id"])
    op.create_index("ix_events_anonymous_id_id", "events", ["anonymous_id", "id"])
    op.drop_index("ix_events_user_id", table_name="events")
    op.drop_index("ix_events_anonymous_id", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.create_index("ix_events_anonymous_id", "events", ["anonymous_id"])
    op.drop_index("ix_events_user_id_id", table_name="events")
    op.drop_index("ix_events_anonymous_id_id", table_name="events")

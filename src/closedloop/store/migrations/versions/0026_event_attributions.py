"""The events applied to a profile that their ids do not lead to.

A timeline, an erasure and a subject export found a person's events by her user ids and, for
events without a user id, her anonymous ids. An event without a user id that the processor
joined to her by its e-mail or phone, while its anonymous id belonged to another customer (a
newsletter form filled in on a family's tablet) or was refused by the anonymous-id limit,
showed in the other customer's timeline, and her erasure left it, with her e-mail address,
in the log. The processor now records such events in `event_attributions`. Events processed
before this revision are recorded by `closedloop rebuild`.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

# (`store.upgrade` answers it where events were processed before this revision.)
REBUILD = (
    "events processed before revision 0026 that joined a customer by her e-mail or phone "
    "are not attributed to her: her timeline and an erasure or export of her data miss "
    "them until `closedloop rebuild`"
)


def upgrade() -> None:
    op.create_table(
        "event_attributions",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_event_attributions"),
    )
    op.create_index(
        "ix_event_attributions_profile_id", "event_attributions", ["profile_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_event_attributions_profile_id", table_name="event_attributions")
    op.drop_table("event_attributions")

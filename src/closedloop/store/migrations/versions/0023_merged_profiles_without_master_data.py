"""A merged profile keeps no master data, problems or customer key.

A merged profile's row points at its survivor; its traits, consent and counts went with the
merge. What was derived from the traits stayed, where the merge came in a later batch than
the profile (a stale copy of the person's e-mail address, name and customer key on the
row), while a rebuild, merging in the batch that created it, stored none. The processor now
derives them again from the emptied traits (`merge_into`); this clears the rows merged
before, as a rebuild would.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from closedloop.profiles.quality import derive_masterdata
from closedloop.store import JSONDocument

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    masterdata, quality = derive_masterdata({}, region="DE")  # no traits: no region read
    profiles = sa.table(
        "profiles",
        sa.column("merged_into", sa.String()),
        sa.column("customer_key", sa.String()),
        sa.column("masterdata", JSONDocument),
        sa.column("quality", JSONDocument),
    )
    op.execute(
        profiles.update()
        .where(profiles.c.merged_into.is_not(None))
        .values(customer_key=None, masterdata=masterdata, quality=quality)
    )


def downgrade() -> None:
    """Nothing to restore: a rebuild stores the same."""

"""PostgreSQL: profiles in byte order of their ids, for feeds.

A feed writes its rows in profile-id order, byte order on both backends (`COLLATE "C"`,
migration 0015). PostgreSQL's primary key on `profiles` follows the database's collation,
so a feed's query could not walk it in the file's order: each range of a feed written in
parts (`closedloop.feeds.parts`) scanned every profile, hashed the range's members and
sorted the result (at 1M profiles ten ranges read the table ten times), and a feed of all
profiles could not be cut into ranges at all. With this index the members' index (0015)
and the profiles' are merged in one order, a range as one range of each. SQLite compares in
byte order already: nothing changes there.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_INDEX = "ix_profiles_id_c"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f'CREATE INDEX {_INDEX} ON profiles (id COLLATE "C")')


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX {_INDEX}")

"""PostgreSQL: the members of a segment in byte order of their ids, for feeds.

A feed writes its rows in profile-id order, byte order on both backends (`COLLATE "C"`,
as SQLite and Python compare), so that its file and its delta do not depend on the
database's collation. PostgreSQL's indexes on `segment_members` follow the database's
collation, so it sorted a feed's members (1M ids: 1.4 s, spilled to disk) and a range of
them (a feed written in parts: `closedloop.feeds.parts`) was a scan of the whole segment.
With this index a feed's cursor reads its segment's members in the file's order, a range as
one range of the index. SQLite compares in byte order already: nothing changes there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_INDEX = "ix_segment_members_segment_c"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f'CREATE INDEX {_INDEX} ON segment_members (segment, profile_id COLLATE "C")')


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX {_INDEX}")

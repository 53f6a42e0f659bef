"""Segment members keyed by profile: `(profile_id, segment)`, one structure on SQLite.

An incremental refresh reads the memberships of the profiles a few batches wrote and writes
their entries and exits. Keyed by `(segment, profile_id)` with a second index by profile
(and, on SQLite, a rowid table besides), each entry or exit changed a random page of two or
three B-trees; those pages were most of the refresh's writes (docs/benchmarks.md,
2026-12-07). SQLite now keeps the members in one B-tree keyed by profile (`WITHOUT ROWID`):
an entry or exit is one random page, and a profile's segments are one range of the key.

A segment's members are read in profile order by a walk of that key that skips the other
segments' rows: a page of members reads `page / share` rows, where `share` is the segment's
part of all memberships; a full refresh reads the members of all the segments it refreshes
in one walk (ADR 0016). PostgreSQL keeps its index by segment in byte order (migration
0015) and gets the same primary key.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# (`entered_at` as `UTCDateTime` stores it on SQLite: integer microseconds)
_CREATE = """
CREATE TABLE segment_members_new (
    profile_id VARCHAR(40) NOT NULL,
    segment VARCHAR(64) NOT NULL,
    entered_at BIGINT NOT NULL,
    CONSTRAINT pk_segment_members PRIMARY KEY ({key})
) WITHOUT ROWID
"""
_BY_PROFILE, _BY_SEGMENT = "profile_id, segment", "segment, profile_id"
_COPY = {
    _BY_PROFILE: """
        INSERT INTO segment_members_new (profile_id, segment, entered_at)
        SELECT profile_id, segment, entered_at FROM segment_members ORDER BY profile_id, segment
    """,
    _BY_SEGMENT: """
        INSERT INTO segment_members_new (profile_id, segment, entered_at)
        SELECT profile_id, segment, entered_at FROM segment_members ORDER BY segment, profile_id
    """,
}


def _rebuild_sqlite(key: str) -> None:
    op.execute(_CREATE.format(key=key))
    op.execute(_COPY[key])
    op.execute("DROP TABLE segment_members")
    op.execute("ALTER TABLE segment_members_new RENAME TO segment_members")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(_BY_PROFILE)  # (the old indexes go with the old table)
        return
    op.drop_index("ix_segment_members_profile_id", table_name="segment_members")
    op.drop_constraint("pk_segment_members", "segment_members", type_="primary")
    op.create_primary_key("pk_segment_members", "segment_members", ["profile_id", "segment"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(_BY_SEGMENT)
    else:
        op.drop_constraint("pk_segment_members", "segment_members", type_="primary")
        op.create_primary_key("pk_segment_members", "segment_members", ["segment", "profile_id"])
    op.create_index("ix_segment_members_profile_id", "segment_members", ["profile_id", "segment"])

"""SQLite: the numbers segment conditions read, in the index of the profiles a batch wrote.

An incremental segment refresh (`closedloop.segments.store.refresh(incremental=True)`, after
each processor batch) evaluates every saved condition on the profiles written since its last
refresh, found by the range `processed_seq` of `ix_profiles_processed_seq`. The shipped
conditions (mood positive or negative, churn risk, promoters, detractors) compare the mood
index numbers and the latest NPS answer, each an expression over the profile's documents;
the index held only `(processed_seq, id)`, so each written profile's table row was read for
them: about 10,000 random rows of a 1.5 GB table after 10,000 events at 1M profiles, most of
the refresh's time. With the same expressions in the index (written exactly as
`closedloop.mood.index.number` and `closedloop.segments.compile.nps_number` compile them:
SQLite matches indexed expressions literally), SQLite evaluates those conditions from the
index entries and never reads the rows.

The processor rewrites this index entry on every profile write anyway (`processed_seq`
changes each time); it now computes four more expressions for it.

PostgreSQL is unchanged: the profiles a batch just wrote are new row versions, which an
index-only scan must still check in the table (they are not yet all-visible), so the wider
index would save nothing there.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_INDEX = "ix_profiles_processed_seq"
_NUMBERS = (
    "processed_seq, id, merged_into, "
    "json_extract(derived, '$.mood_k'), json_extract(derived, '$.mood_churn'), "
    "json_extract(computed, '$.nps[0]'), json_extract(computed, '$.nps[1]')"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"DROP INDEX {_INDEX}")
    op.execute(f"CREATE INDEX {_INDEX} ON profiles ({_NUMBERS})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"DROP INDEX {_INDEX}")
    op.execute(f"CREATE INDEX {_INDEX} ON profiles (processed_seq, id)")

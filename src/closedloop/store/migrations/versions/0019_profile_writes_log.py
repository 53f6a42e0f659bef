"""The profiles each processor batch wrote, as a log; the latest NPS answer in `derived`.

An incremental segment refresh finds the profiles written since its last refresh. It found
them in `ix_profiles_processed_seq`, whose entry every profile write moved (the old one a
random page of the index at 1M profiles: 40 % of the processor's `UPDATE`). They are now
rows of `profile_writes` `(seq, profile_id, merged_into, numbers)`: a batch appends its rows
at the end of the key order, a refresh reads a range, and pruning deletes from the front
(`closedloop.segments.store`). Each row carries the numbers the shipped conditions compare
(the mood index numbers, the latest NPS answer), as written with the profile: on SQLite a
refresh evaluates those conditions on the log alone (what migration 0017's index did).
`processed_seq` stays on the row, no longer indexed. The log starts empty, so every
segment's next refresh is a full one.

SQLite: `ix_profiles_nps` read `computed`, which every profile write sets (the counts), and
an index over a column an `UPDATE` sets is rewritten. The latest NPS answer is now kept in
`derived` too (`derived.nps = [score, at_us]`, written only when it changes, beside
`computed.nps`, which the profile JSON shows), and the index is over it. PostgreSQL keeps
its generated columns over `computed` (migration 0014).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# The expressions `closedloop.mood.index.number` and `closedloop.segments.compile.nps_number`
# compile on SQLite, character for character (SQLite matches indexed expressions literally).
_NPS = "json_extract(derived, '$.nps[0]'), json_extract(derived, '$.nps[1]')"
_OLD_NPS = "json_extract(computed, '$.nps[0]'), json_extract(computed, '$.nps[1]')"
_FILL_SQLITE = (
    "UPDATE profiles SET derived = json_set(derived, '$.nps', json_array("
    "json_extract(computed, '$.nps[0]'), json_extract(computed, '$.nps[1]'))) "
    "WHERE json_type(computed, '$.nps') = 'array'"
)
_OLD_PROCESSED = (
    "processed_seq, id, merged_into, "
    "json_extract(derived, '$.mood_k'), json_extract(derived, '$.mood_churn'), " + _OLD_NPS
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "profile_writes",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("merged_into", sa.String(40), nullable=True),
        sa.Column("mood_k", sa.Float(), nullable=True),
        sa.Column("mood_last", sa.BigInteger(), nullable=True),
        sa.Column("mood_churn", sa.BigInteger(), nullable=True),
        sa.Column("nps_score", sa.Float(), nullable=True),
        sa.Column("nps_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", "profile_id", name="pk_profile_writes"),
        sqlite_with_rowid=False,
    )
    # The log starts empty: every segment's next refresh is a full one.
    op.execute("UPDATE segments SET refreshed_seq = NULL")
    op.execute("DROP INDEX ix_profiles_processed_seq")
    if sqlite:
        op.execute(_FILL_SQLITE)
        op.execute("DROP INDEX ix_profiles_nps")
        op.execute(
            f"CREATE INDEX ix_profiles_nps ON profiles ({_NPS}, merged_into, id) "
            "WHERE json_extract(derived, '$.nps[0]') IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE profiles SET derived = jsonb_set(derived, '{nps}', "
            "jsonb_build_array(computed -> 'nps' -> 0, computed -> 'nps' -> 1)) "
            "WHERE jsonb_typeof(computed -> 'nps') = 'array'"
        )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP INDEX ix_profiles_nps")
        op.execute(
            f"CREATE INDEX ix_profiles_nps ON profiles ({_OLD_NPS}, merged_into, id) "
            "WHERE json_extract(computed, '$.nps[0]') IS NOT NULL"
        )
        op.execute("UPDATE profiles SET derived = json_remove(derived, '$.nps')")
        op.execute(f"CREATE INDEX ix_profiles_processed_seq ON profiles ({_OLD_PROCESSED})")
    else:
        op.execute("UPDATE profiles SET derived = derived - 'nps'")
        op.execute("CREATE INDEX ix_profiles_processed_seq ON profiles (processed_seq, id)")
    op.drop_table("profile_writes")

"""The latest-NPS index holds only the profiles with an answer.

`ix_profiles_nps` (migrations 0013 and 0014) answers `latest nps` conditions. Every profile
had an entry, most of them without an answer (NULL), and an entry is rewritten whenever
`computed` is, which the processor writes with every event (the counts): at 1M profiles a
random page per update, for an entry that never answers a condition. Only profiles with an
answer have one now. Every `latest nps` comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`) is
false for a profile without an answer, so both planners still take the index for it (they
see that the comparison implies `IS NOT NULL`; tested for each operator).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_INDEX = "ix_profiles_nps"
# The columns of 0013 (SQLite's expressions) and 0014 (PostgreSQL's generated columns).
_SQLITE = "json_extract(computed, '$.nps[0]'), json_extract(computed, '$.nps[1]'), merged_into, id"
_POSTGRES = "nps_score, nps_at, merged_into, id"
_ANSWERED = {
    "sqlite": "json_extract(computed, '$.nps[0]') IS NOT NULL",
    "postgresql": "nps_score IS NOT NULL",
}


def _create(where: bool) -> None:
    dialect = op.get_bind().dialect.name
    columns = _POSTGRES if dialect == "postgresql" else _SQLITE
    op.execute(f"DROP INDEX {_INDEX}")
    partial = f" WHERE {_ANSWERED[dialect]}" if where else ""
    op.execute(f"CREATE INDEX {_INDEX} ON profiles ({columns}){partial}")


def upgrade() -> None:
    _create(where=True)


def downgrade() -> None:
    _create(where=False)

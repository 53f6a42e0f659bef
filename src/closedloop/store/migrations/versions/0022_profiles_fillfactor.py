"""PostgreSQL: profile pages keep room for the processor's updates (fillfactor 70).

Each batch updates the profiles its events touch, most of them only their counts
(`computed`, `updated_at`, `processed_seq`), which no index covers. PostgreSQL writes a
row's new version beside the old one on the same page (a HOT update, no index entry
touched) only where the page has room: at the default fillfactor of 100 it has none, and
every update wrote an entry into each of the table's eight indexes. Measured on the demo
shop (docs/benchmarks.md, 2026-12-06): the profile updates of a drain took 0.68 to 0.74 s
instead of 0.95 to 1.02 s. The setting applies to pages written from now on; a
`VACUUM FULL profiles` rewrites the old ones. SQLite has no such setting.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE profiles SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE profiles RESET (fillfactor)")

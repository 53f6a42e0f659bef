"""The store: engine, shared metadata, migrations and each backend's fast paths.

SQLite (WAL) is the embedded default; PostgreSQL (psycopg 3) the shared one. Domain packages
define their own tables on `metadata`; Alembic migrations in `store/migrations` create them.
"""

from closedloop.store._bulk import bulk_insert_ignoring_duplicates, sqlite_insert_autocommit
from closedloop.store._definitions import store_definition
from closedloop.store._driver import driver_time, fetch_all, native_sql
from closedloop.store._engine import (
    appending,
    begin_write,
    create_store_engine,
    is_postgres,
    is_sqlite,
    relaxed_sync,
    sqlite_file,
    wal_checkpointer,
    write_turn,
)
from closedloop.store._migrate import (
    current_revision,
    head_revision,
    schema_problem,
    upgrade,
)
from closedloop.store._types import (
    EPOCH,
    MAX_ROW_ID,
    JSONDocument,
    UTCDateTime,
    metadata,
    parse_row_id,
    to_epoch_us,
)

__all__ = [
    "EPOCH",
    "MAX_ROW_ID",
    "JSONDocument",
    "UTCDateTime",
    "appending",
    "begin_write",
    "bulk_insert_ignoring_duplicates",
    "create_store_engine",
    "current_revision",
    "driver_time",
    "fetch_all",
    "head_revision",
    "is_postgres",
    "is_sqlite",
    "metadata",
    "native_sql",
    "parse_row_id",
    "relaxed_sync",
    "schema_problem",
    "sqlite_file",
    "sqlite_insert_autocommit",
    "store_definition",
    "to_epoch_us",
    "upgrade",
    "wal_checkpointer",
    "write_turn",
]

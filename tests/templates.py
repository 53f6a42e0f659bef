"""Migrated stores made once a test session and copied for each test (the `engine` fixture).

Running the 26 migrations took 0.08 to 0.16 s for a SQLite file and 0.3 to 0.5 s for a
PostgreSQL schema (Alembic reads its scripts again, and each revision's DDL runs in turn),
for each of the about 1,700 tests that take a store. So each backend's store is migrated once
(`store.upgrade`, the real path), and each test gets a copy of it:

- SQLite: the file, copied byte for byte while no connection is open.
- PostgreSQL: `pg_dump` of the migrated template schema (tables, indexes, sequences, rows
  such as the Alembic revision and the processor's cursor), replayed into the test's own
  empty schema in one transaction (0.07 to 0.1 s). Where `pg_dump` is missing or refuses
  the server (another major version), each test's schema is migrated as before.

`tests/store/test_templates.py` checks that a copy is the store the migrations make.
The migrations themselves are tested on empty and older stores in `tests/store`.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess  # nosec B404 - pg_dump, the PostgreSQL client's own tool
from pathlib import Path
from urllib.parse import unquote

import psycopg
import sqlalchemy as sa

from closedloop import store

__all__ = ["StoreTemplates", "dump_schema", "schema_of", "schema_url"]

_OPTION = "-csearch_path="


def schema_url(base: str, schema: str) -> str:
    """`base` (a PostgreSQL URL) with its connections in `schema` (`search_path`)."""
    url = sa.make_url(base)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"{_OPTION}{schema}"}).render_as_string(
        hide_password=False
    )


def schema_of(db_url: str) -> str | None:
    """The PostgreSQL schema a test URL's connections use (`search_path`); None for SQLite."""
    options = sa.make_url(db_url).query.get("options")
    if isinstance(options, tuple):
        options = options[0]
    if not options or not unquote(options).startswith(_OPTION):
        return None
    return unquote(options)[len(_OPTION) :]


def _libpq_url(db_url: str) -> str:
    """The URL without SQLAlchemy's driver name and without the test's `search_path`."""
    url = sa.make_url(db_url).set(drivername="postgresql")
    return url.difference_update_query(["options"]).render_as_string(hide_password=False)


def dump_schema(db_url: str, schema: str) -> str:
    """`pg_dump` of one schema: its objects and rows as SQL, owners and grants left out.
    Raises `OSError` or `subprocess.CalledProcessError` where `pg_dump` cannot."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise FileNotFoundError("pg_dump")
    done = subprocess.run(  # nosec B603 - fixed arguments, no shell
        [
            pg_dump,
            f"--dbname={_libpq_url(db_url)}",
            f"--schema={schema}",
            "--inserts",
            "--no-owner",
            "--no-privileges",
            "--no-comments",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    # psql's meta-commands (`\restrict`, since 15.14) and comments are not SQL.
    return "\n".join(
        line
        for line in done.stdout.splitlines()
        if line and not line.startswith("\\") and not line.startswith("--")
    )


class StoreTemplates:
    """Each backend's migrated store, made on first use (`fill`)."""

    def __init__(self, workdir: Path, postgres_url: str | None) -> None:
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.head = store.head_revision()
        self._sqlite: Path | None = None
        self._postgres: tuple[str, str] | None = None  # (template name, its SQL)
        self.postgres_fallback: str | None = None  # why each schema is migrated instead

    def fill(self, db_url: str) -> None:
        """Make the empty store at `db_url` (a SQLite file not there yet, or an empty
        PostgreSQL schema) what `store.upgrade` makes of it."""
        url = sa.make_url(db_url)
        if url.get_backend_name() == "sqlite":
            assert url.database
            target = Path(url.database)
            template = self._sqlite_template()
            shutil.copyfile(template, target)
        else:
            schema = schema_of(db_url)
            made = self._postgres_template() if schema else None
            if schema is None or made is None:
                engine = store.create_store_engine(db_url)
                store.upgrade(engine)
                engine.dispose()
                return
            name, sql = made
            _run_sql(db_url, sql.replace(name, schema))
        engine = store.create_store_engine(db_url)
        try:
            revision = store.current_revision(engine)
        finally:
            engine.dispose()
        assert revision == self.head, f"copied store at {revision}, not {self.head}"

    def _sqlite_template(self) -> Path:
        if self._sqlite is None:
            path = self.workdir / "template.db"
            engine = store.create_store_engine(f"sqlite:///{path}", sqlite_synchronous="NORMAL")
            store.upgrade(engine)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
            if (wal := path.with_name(path.name + "-wal")).exists() and wal.stat().st_size:
                raise RuntimeError(f"{wal} holds pages after the last connection closed")
            self._sqlite = path
        return self._sqlite

    def _postgres_template(self) -> tuple[str, str] | None:
        if self._postgres is None and self.postgres_fallback is None and self.postgres_url:
            name = "cl_template_" + secrets.token_hex(6)
            admin = sa.create_engine(schema_url(self.postgres_url, "public"))
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
            try:
                engine = store.create_store_engine(schema_url(self.postgres_url, name))
                store.upgrade(engine)
                engine.dispose()
                sql = dump_schema(self.postgres_url, name)
            except (OSError, subprocess.SubprocessError) as exc:
                # (tests/store/test_templates.py reports it as a skip)
                self.postgres_fallback = f"pg_dump: {exc}"
                return None
            finally:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
                admin.dispose()
            # The test's schema exists already (the `db_url` fixture made it).
            sql = sql.replace(f"CREATE SCHEMA {name};", "")
            self._postgres = (name, sql)
        return self._postgres


def _run_sql(db_url: str, sql: str) -> None:
    """Run a dump's statements in one transaction on a connection of their own (the dump
    sets its session's `search_path` and other settings)."""
    with psycopg.connect(_libpq_url(db_url)) as conn:
        conn.execute(sql)  # no parameters: many statements at once (simple query protocol)

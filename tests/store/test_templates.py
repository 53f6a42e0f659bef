"""The tests' stores are copies of one migrated store (`tests/templates.py`): each copy must
be the store `store.upgrade` makes, object for object and row for row."""

from __future__ import annotations

import re
import secrets
import subprocess  # nosec B404 - tests/templates.py runs pg_dump
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from closedloop import store
from tests.conftest import POSTGRES_URL, _postgres_schema_url
from tests.templates import StoreTemplates, dump_schema, schema_of


@pytest.fixture
def migrated_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second empty store beside `db_url`'s, migrated by `store.upgrade`."""
    if schema_of(db_url) is None:
        url = f"sqlite:///{tmp_path / 'migrated.db'}"
        schema = None
    else:
        assert POSTGRES_URL
        schema = "t_" + secrets.token_hex(6)
        admin = sa.create_engine(_postgres_schema_url(POSTGRES_URL, "public"))
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = _postgres_schema_url(POSTGRES_URL, schema)
    try:
        engine = store.create_store_engine(url, sqlite_synchronous="NORMAL")
        store.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        if schema is not None:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()


# The rows the migrations seed (the shipped segments, feeds, rules) carry when the store
# was made: the template's, minutes before a test's own.
_PG_TIME = re.compile(r"'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00'")
_DAY_US = 86_400_000_000


def _timeless(value: object) -> object:
    """SQLite: a time of today (epoch microseconds) as `<time>`."""
    now = time.time_ns() // 1000
    if isinstance(value, int) and now - _DAY_US < value <= now:
        return "<time>"
    return value


def _sqlite_contents(url: str) -> dict[str, object]:
    engine = store.create_store_engine(url, sqlite_synchronous="NORMAL")
    try:
        with engine.connect() as conn:
            found: dict[str, object] = {
                f"PRAGMA {name}": conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "page_size", "auto_vacuum", "user_version")
            }
            master = conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).all()
            found["objects"] = master
            for kind, name, _, _ in master:
                if kind == "table":  # the store's own tables, as sqlite_master names them
                    query = f'SELECT * FROM "{name}"'  # noqa: S608
                    rows = conn.exec_driver_sql(query).all()
                    found[name] = sorted(repr(tuple(map(_timeless, row))) for row in rows)
            return found
    finally:
        engine.dispose()


def _postgres_contents(url: str) -> str:
    schema = schema_of(url)
    assert schema and POSTGRES_URL
    try:
        dumped = dump_schema(POSTGRES_URL, schema)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"pg_dump: {exc}")
    return _PG_TIME.sub("<time>", dumped.replace(schema, "<schema>"))


def test_a_copied_store_is_the_store_the_migrations_make(
    db_url: str, migrated_url: str, store_templates: StoreTemplates
) -> None:
    store_templates.fill(db_url)
    if store_templates.postgres_fallback and schema_of(db_url):
        pytest.skip(f"each test's schema is migrated: {store_templates.postgres_fallback}")
    if schema_of(db_url) is None:
        copied, migrated = _sqlite_contents(db_url), _sqlite_contents(migrated_url)
        assert copied["objects"], "no tables"
        assert copied["alembic_version"] == [repr((store.head_revision(),))]
    else:
        copied, migrated = _postgres_contents(db_url), _postgres_contents(migrated_url)  # type: ignore[assignment]
        assert "CREATE TABLE <schema>.events" in copied
        assert "INSERT INTO <schema>.alembic_version" in copied
    assert copied == migrated


def test_schema_of_reads_the_test_urls_search_path() -> None:
    assert schema_of(_postgres_schema_url("postgresql://u@h/db", "t_ab12")) == "t_ab12"
    assert schema_of("sqlite:////tmp/x.db") is None

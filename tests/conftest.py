"""Shared fixtures: a store on every backend, an app, a live server, a source."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import ingest, store
from closedloop.config import IngestSettings, Settings
from closedloop.web import create_app
from tests.templates import StoreTemplates, schema_url

ADMIN_TOKEN = "test-admin-token-" + "x" * 16
POSTGRES_URL = os.environ.get("CLOSEDLOOP_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


_postgres_schema_url = schema_url  # (the name the tests import)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'closedloop.db'}"
        return
    if not POSTGRES_URL:
        if IN_CI:
            pytest.fail("CI=true but CLOSEDLOOP_TEST_POSTGRES_URL is not set")
        pytest.skip("set CLOSEDLOOP_TEST_POSTGRES_URL to run PostgreSQL cases")
    schema = "t_" + secrets.token_hex(6)
    admin = sa.create_engine(_postgres_schema_url(POSTGRES_URL, "public"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _postgres_schema_url(POSTGRES_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def store_templates(tmp_path_factory: pytest.TempPathFactory) -> StoreTemplates:
    return StoreTemplates(tmp_path_factory.mktemp("templates"), POSTGRES_URL)


@pytest.fixture
def engine(db_url: str, store_templates: StoreTemplates) -> Iterator[Engine]:
    """A store at the newest revision: a copy of one migrated once a session
    (`tests/templates.py`)."""
    store_templates.fill(db_url)
    eng = store.create_store_engine(db_url, sqlite_synchronous="NORMAL")
    yield eng
    eng.dispose()


def make_settings(db_url: str, **ingest_overrides: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=db_url,
        admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
        secret_key="test-secret-" + "y" * 20,  # type: ignore[arg-type]
        ingest=IngestSettings(
            **{"sqlite_synchronous": "NORMAL", **ingest_overrides}  # type: ignore[arg-type]
        ),
    )


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def source(engine: Engine) -> ingest.NewSourceKey:
    return ingest.add_source(engine, "shop-web", kind="web")


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class LiveServer:
    url: str
    port: int
    server: uvicorn.Server


@pytest.fixture
def live_server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    """The app served by uvicorn on a free loopback port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, engine=engine), log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("live server did not start")
        time.sleep(0.01)
    yield LiveServer(url=f"http://127.0.0.1:{port}", port=port, server=server)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def wait_for(condition: object, *, timeout: float = 20.0, interval: float = 0.02) -> None:
    """Poll `condition()` until it is true or the deadline passes (then fail)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")

"""Faults that may pass get 503 + Retry-After, never a 4xx (SDKs drop a batch on 4xx)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from closedloop import ingest, store
from closedloop.config import IngestSettings
from closedloop.errors import OverloadedError
from closedloop.ingest import GroupCommitWriter
from closedloop.metrics import Metrics
from closedloop.web import create_app
from tests.conftest import make_settings
from tests.helpers import basic, stored, track


def test_store_gone_mid_run_answers_503_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    url = f"sqlite:///{db}"
    engine = store.create_store_engine(url)
    store.upgrade(engine)
    key = ingest.add_source(engine, "web", kind="web").write_key
    with TestClient(create_app(make_settings(url), engine=engine)) as client:
        assert client.post("/v1/track", json=track(), headers=basic(key)).status_code == 200
        engine.dispose()
        shutil.move(db, tmp_path / "away.db")
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        db.write_bytes(b"")  # an empty database: no tables, as if the volume were not mounted
        response = client.post("/v1/track", json=track(), headers=basic(key))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.json()["error"]["code"] == "unavailable"
        health = client.get("/healthz")
        assert health.status_code == 200  # the file opens; the writer is what failed
        engine.dispose()
        db.unlink()
        shutil.move(tmp_path / "away.db", db)
        assert client.post("/v1/track", json=track(), headers=basic(key)).status_code == 200
    assert len(stored(engine)) == 2
    engine.dispose()


def test_unreachable_postgres_answers_503_not_4xx(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1"
    with TestClient(create_app(make_settings(url))) as client:
        response = client.post("/v1/track", json=track(), headers=basic("wk_whatever-key-123"))
        assert response.status_code == 503
        assert "Retry-After" in response.headers
        assert client.get("/healthz").status_code == 503


def test_full_write_queue_refuses_with_overloaded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    engine = store.create_store_engine(url)
    store.upgrade(engine)
    limits = IngestSettings(queue_max_events=100, group_max_events=10)
    metrics = Metrics()
    # Another process holds the write lock, so the writer's first commit waits.
    blocker = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    now = datetime.now(UTC)
    row = (1, "m", "track", "e", "u", None, now, now, now, now, "{}")

    async def scenario() -> tuple[int, int]:
        writer = GroupCommitWriter(engine, limits, metrics)
        await writer.start()
        waiting = []
        for i in range(10):
            rows = [(*row[:1], f"m{i}-{j}", *row[2:]) for j in range(10)]
            waiting.append(asyncio.create_task(writer.submit(rows, [])))
        await asyncio.sleep(0)  # let the tasks queue
        while writer.queued_events < 100:
            await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError) as refused:
            await writer.submit([(*row[:1], "extra", *row[2:])], [])
        assert refused.value.retry_after == limits.retry_after_seconds
        blocker.execute("ROLLBACK")
        results = await asyncio.gather(*waiting, return_exceptions=True)
        await writer.stop()
        return len(results), sum(1 for r in results if isinstance(r, BaseException))

    total, errors = asyncio.run(scenario())
    blocker.close()
    assert (total, errors) == (10, 0)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == 100
    assert metrics.overloaded._value.get() == 1
    engine.dispose()

"""The group-commit writer: groups requests, answers each, and outlives any fault."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.config import IngestSettings
from closedloop.errors import TransientError
from closedloop.ingest import GroupCommitWriter
from closedloop.ingest.committer import CommitOutcome, Committer, RequestRows
from closedloop.metrics import Metrics

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def _row(message_id: str) -> tuple[Any, ...]:
    return (1, message_id, "track", "E", "u", None, NOW, NOW, NOW, NOW, "{}")


class _FailsOnce:
    """A committer whose first commit raises a bug-like error, then works."""

    def __init__(self, engine: Engine) -> None:
        self.inner = Committer(engine, retry_after=1)
        self.calls = 0

    def commit(self, group: Sequence[RequestRows]) -> CommitOutcome:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("a bug, not a database fault")
        return self.inner.commit(group)


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one())


def test_writer_answers_503_for_an_unexpected_fault_and_goes_on(engine: Engine) -> None:
    ingest.add_source(engine, "web", kind="web")
    committer = _FailsOnce(engine)
    metrics = Metrics()

    async def scenario() -> tuple[BaseException | None, int]:
        writer = GroupCommitWriter(engine, IngestSettings(), metrics, committer=committer)
        await writer.start()
        first: BaseException | None = None
        try:
            await writer.submit([_row("a")], [])
        except TransientError as exc:
            first = exc
        second = await writer.submit([_row("b"), _row("c")], [])
        await writer.stop()
        return first, second.inserted

    first, inserted = asyncio.run(scenario())
    assert isinstance(first, TransientError)
    assert "KeyError" in first.message
    assert inserted == 2
    assert _count(engine) == 2


def test_concurrent_requests_share_commits_and_each_learns_its_duplicates(
    engine: Engine,
) -> None:
    ingest.add_source(engine, "web", kind="web")
    metrics = Metrics()

    async def scenario() -> list[tuple[int, int]]:
        writer = GroupCommitWriter(engine, IngestSettings(), metrics)
        await writer.start()
        await writer.submit([_row("dup-0")], [])
        requests = [
            [_row(f"r{i}-{j}") for j in range(10)] + ([_row("dup-0")] if i == 0 else [])
            for i in range(20)
        ]
        results = await asyncio.gather(*(writer.submit(rows, []) for rows in requests))
        await writer.stop()
        return [(r.inserted, r.duplicates) for r in results]

    results = asyncio.run(scenario())
    assert sum(i for i, _ in results) == 200
    assert sum(d for _, d in results) == 1
    assert _count(engine) == 201
    commits = metrics.commit_events._sum.get()
    assert commits == 1 + 201  # the first row, then 200 new rows and the one duplicate


def test_writer_commits_group_after_group_while_the_event_loop_is_busy(engine: Engine) -> None:
    """The writer thread takes the next group itself: a loop busy with other requests
    (reading, validating) holds back no commit."""
    ingest.add_source(engine, "web", kind="web")
    metrics = Metrics()

    async def scenario() -> tuple[int, list[int]]:
        writer = GroupCommitWriter(engine, IngestSettings(group_max_events=10), metrics)
        await writer.start()
        tasks = [
            asyncio.create_task(writer.submit([_row(f"g{i}-{j}") for j in range(10)], []))
            for i in range(5)
        ]
        await asyncio.sleep(0)  # the requests queue their rows: five groups of ten
        deadline = time.monotonic() + 10
        while _count(engine) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)  # the loop's thread busy without yielding
        stored = _count(engine)
        results = await asyncio.gather(*tasks)
        await writer.stop()
        return stored, [r.inserted for r in results]

    stored, inserted = asyncio.run(scenario())
    assert stored == 50
    assert inserted == [10] * 5
    assert metrics.commit_seconds._sum.get() > 0

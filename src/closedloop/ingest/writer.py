"""Group commit: one writer commits the events of many concurrent requests at once.

Requests hand their rows to `GroupCommitWriter.submit` and wait; the writer task takes
everything queued (up to `group_max_events`), appends it in one transaction on its own
thread, then answers every waiting request. The queue is bounded by events, so memory stays
flat under overload and the excess gets `OverloadedError` (503 + Retry-After) at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from closedloop.config import IngestSettings
from closedloop.errors import OverloadedError, TransientError
from closedloop.ingest.committer import AppendResult, Committer, GroupCommitter
from closedloop.metrics import Metrics

__all__ = ["GroupCommitWriter"]

_log = logging.getLogger(__name__)


@dataclass
class _Pending:
    rows: list[tuple[Any, ...]]
    failed: list[tuple[Any, ...]]
    future: asyncio.Future[AppendResult]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = max(1, len(self.rows) + len(self.failed))


class GroupCommitWriter:
    def __init__(
        self,
        engine: Engine,
        limits: IngestSettings,
        metrics: Metrics,
        *,
        committer: GroupCommitter | None = None,
    ) -> None:
        self._committer = committer or Committer(engine, retry_after=limits.retry_after_seconds)
        self._limits = limits
        self._metrics = metrics
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="closedloop-writer")
        self._closing = False

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="closedloop-group-commit")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def queued_events(self) -> int:
        return self._queued_events

    async def submit(
        self, rows: list[tuple[Any, ...]], failed: list[tuple[Any, ...]]
    ) -> AppendResult:
        """Queue rows for the next group commit and wait until they are committed."""
        if self._wakeup is None or self._closing:
            raise TransientError("the server is shutting down: retry", retry_after=1)
        pending = _Pending(rows, failed, asyncio.get_running_loop().create_future())
        if self._queued_events + pending.size > self._limits.queue_max_events and self._queue:
            self._metrics.overloaded.inc()
            raise OverloadedError(
                f"the write queue is full ({self._queued_events} events waiting): retry in "
                f"{self._limits.retry_after_seconds} s",
                retry_after=self._limits.retry_after_seconds,
            )
        self._queue.append(pending)
        self._queued_events += pending.size
        self._metrics.queue_events.set(self._queued_events)
        self._wakeup.set()
        return await pending.future

    async def _run(self) -> None:
        if self._wakeup is None:
            raise RuntimeError("GroupCommitWriter.start() was not awaited")
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group: list[_Pending] = []
            size = 0
            while self._queue and (
                not group or size + self._queue[0].size <= self._limits.group_max_events
            ):
                item = self._queue.popleft()
                group.append(item)
                size += item.size
            try:
                results = await loop.run_in_executor(self._executor, self._commit_group, group)
            except TransientError as exc:
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(exc)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any fault
                # An unexpected fault must not kill the writer (every later request would
                # hang): the group is answered 503, which SDKs retry, and the loop goes on.
                _log.exception("group commit failed unexpectedly")
                transient = TransientError(
                    f"the event store failed ({type(exc).__name__}): retry later",
                    retry_after=self._limits.retry_after_seconds,
                )
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(transient)
            else:
                for item, result in zip(group, results, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)
            finally:
                self._queued_events -= size
                self._metrics.queue_events.set(self._queued_events)

    def _commit_group(self, group: list[_Pending]) -> list[AppendResult]:
        """Runs on the writer thread: one transaction for the whole group."""
        outcome = self._committer.commit([(item.rows, item.failed) for item in group])
        self._metrics.commit_seconds.observe(outcome.seconds)
        self._metrics.commit_events.observe(outcome.events)
        return outcome.results

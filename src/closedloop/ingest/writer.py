"""Group commit: one writer commits the events of many concurrent requests at once.

Requests hand their rows to `GroupCommitWriter.submit` and wait; the writer thread takes
everything queued (up to `group_max_events`), appends it in one transaction, hands the
answers to the event loop and takes the next group at once. The queue is bounded by events,
so memory stays flat under overload and the excess gets `OverloadedError` (503 +
Retry-After) at once.

The writer is a thread that takes its groups itself, not a task of the event loop that
runs each group in an executor: the loop, busy reading and validating the next requests,
answered a finished group and started the next one only between two of them, so the
store waited behind the loop's thread (batch events/s medians from 26,669 and 26,920 to
31,753 and 28,243 in turn, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
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
        self._queued_events = 0  # queued and being committed; guarded by `_ready`
        self._ready = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop,), name="closedloop-writer", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    @property
    def queued_events(self) -> int:
        return self._queued_events

    async def submit(
        self, rows: list[tuple[Any, ...]], failed: list[tuple[Any, ...]]
    ) -> AppendResult:
        """Queue rows for the next group commit and wait until they are committed."""
        if self._loop is None or self._closing:
            raise TransientError("the server is shutting down: retry", retry_after=1)
        pending = _Pending(rows, failed, self._loop.create_future())
        with self._ready:
            full = self._queued_events + pending.size > self._limits.queue_max_events
            if full and self._queue:
                self._metrics.overloaded.inc()
                raise OverloadedError(
                    f"the write queue is full ({self._queued_events} events waiting): retry "
                    f"in {self._limits.retry_after_seconds} s",
                    retry_after=self._limits.retry_after_seconds,
                )
            self._queue.append(pending)
            self._queued_events += pending.size
            queued = self._queued_events
            self._ready.notify()
        self._metrics.queue_events.set(queued)
        return await pending.future

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The writer thread: commit group after group until stopped with nothing queued."""
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:
                    return
                group: list[_Pending] = []
                size = 0
                while self._queue and (
                    not group or size + self._queue[0].size <= self._limits.group_max_events
                ):
                    item = self._queue.popleft()
                    group.append(item)
                    size += item.size
            outcome: list[AppendResult] | TransientError
            try:
                outcome = self._commit_group(group)
            except TransientError as exc:
                outcome = exc
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any fault
                # An unexpected fault must not kill the writer (every later request would
                # hang): the group is answered 503, which SDKs retry, and the loop goes on.
                _log.exception("group commit failed unexpectedly")
                outcome = TransientError(
                    f"the event store failed ({type(exc).__name__}): retry later",
                    retry_after=self._limits.retry_after_seconds,
                )
            with self._ready:
                self._queued_events -= size
                queued = self._queued_events
            self._metrics.queue_events.set(queued)
            try:
                loop.call_soon_threadsafe(_answer, group, outcome)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return

    def _commit_group(self, group: list[_Pending]) -> list[AppendResult]:
        """Runs on the writer thread: one transaction for the whole group."""
        outcome = self._committer.commit([(item.rows, item.failed) for item in group])
        self._metrics.commit_seconds.observe(outcome.seconds)
        self._metrics.commit_events.observe(outcome.events)
        return outcome.results


def _answer(group: list[_Pending], outcome: list[AppendResult] | TransientError) -> None:
    """On the event loop: answer each request of a committed (or refused) group."""
    for index, item in enumerate(group):
        if item.future.done():  # the client went away meanwhile
            continue
        if isinstance(outcome, TransientError):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome[index])

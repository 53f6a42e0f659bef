"""A full feed's file written by several processes at once.

A feed's time goes to Python's work per row (decoding documents, cells, CSV), which one
process does on one core. Here the customers are cut into ranges of profile ids
(`range_bounds`, about `FEEDS__RANGE_ROWS` each); each range is written to a file of its own
by the next free process, the run's own process among them (`write_range`); the range files
are joined in id order as they become ready (`write_in_parts`). The result is the file one
process writes, byte for byte: the same rows in the same order, one header, one byte order
mark, the same counts, and an unencodable cell named by its row in the whole file.

Worker processes are fresh interpreters (`python -m closedloop.feeds._part_worker`: no copy
of the running server's threads and locks) that read their ranges on their own connections,
so each range is read in a transaction of its own (ADR 0012).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle  # nosec B403
import struct
import subprocess  # nosec B404
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.config import Settings
from closedloop.feeds._tables import feed_runs
from closedloop.feeds.definition import CsvFormat, FeedDefinition, JsonlFormat
from closedloop.feeds.formats import EncodingProblemError, FileWriter, open_writer
from closedloop.feeds.rows import Bounds, RowStats, chunked_rows, feed_columns
from closedloop.profiles._tables import profiles
from closedloop.segments._tables import segment_members
from closedloop.store import create_store_engine, is_postgres

__all__ = [
    "PartJob",
    "PartResult",
    "keep_workers_ready",
    "process_count",
    "range_bounds",
    "ready_workers",
    "stop_ready_workers",
    "write_in_parts",
    "write_range",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartJob:
    """What every range of one run shares (sent to each worker process)."""

    settings: Settings
    definition: FeedDefinition
    fmt: CsvFormat | JsonlFormat
    header: tuple[str, ...]
    now: datetime


@dataclass(frozen=True)
class PartResult:
    rows: int
    stats: RowStats
    peak_kb: int | None  # the worker process's peak memory (VmHWM), None in the run's own


def range_bounds(conn: sa.Connection, definition: FeedDefinition, *, rows: int) -> list[str]:
    """Profile ids that cut the feed's customers into ranges of about `rows` (in byte order,
    the order of the file); none for a feed with fewer. Read from the first source segment's
    members (or all profiles) by one walk of their index (PostgreSQL: the one in byte order,
    migrations 0015 and 0016)."""
    if definition.source.segments:
        key: Any = segment_members.c.profile_id
        base = sa.select(key).where(segment_members.c.segment == definition.source.segments[0])
    else:
        key = profiles.c.id
        base = sa.select(key)
    if is_postgres(conn.engine):
        key = key.collate("C")
    found: list[str] = []
    while True:
        stmt = base.order_by(key).offset(rows - 1).limit(2)  # a bound, and a row after it
        if found:
            stmt = stmt.where(key > found[-1])  # (the walk in the index's own order)
        ahead = conn.execute(stmt).scalars().all()
        if len(ahead) < 2:
            break
        found.append(ahead[0])
    return found  # (in byte order: the walk's own)


_engines: dict[str, Engine] = {}


def _engine_of(settings: Settings) -> Engine:
    """The store engine of a worker process (one per process, kept for its next ranges)."""
    url = settings.database_url
    if url not in _engines:
        _engines[url] = create_store_engine(url)
    return _engines[url]


def _peak_kb() -> int | None:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        return int(line.split()[1])
    return None


def write_range(
    job: PartJob, bounds: Bounds, path: Path, *, engine: Engine | None = None
) -> PartResult:
    """Write the rows of one range to `path` (no header): in a worker process, or in the
    run's own with its `engine`."""
    stats = RowStats()
    with path.open("wb") as out, (engine or _engine_of(job.settings)).connect() as conn:
        writer = open_writer(out, job.fmt, job.header, part=True)
        chunks = feed_columns(
            conn, job.definition, job.settings, now=job.now, stats=stats, bounds=bounds
        )
        with contextlib.closing(chunks):
            for columns in chunks:
                writer.write_columns(columns)
    return PartResult(writer.rows, stats, _peak_kb() if engine is None else None)


class _Ranges:
    """The ranges of one run, their results as they come, and the joining in order."""

    def __init__(self, bounds: list[str], staged: Path) -> None:
        edges: list[str | None] = [None, *bounds, None]
        self.ranges: list[Bounds] = list(itertools.pairwise(edges))
        self.paths = [staged.with_name(f"{staged.name}.{n}") for n in range(len(self.ranges))]
        self._todo = deque(range(len(self.ranges)))
        self._lock = threading.Lock()
        self.done: dict[int, Future[PartResult]] = {}
        self.joined = 0
        self.started_ahead = 0  # workers that were started ahead of the run

    def count_started_ahead(self) -> None:
        with self._lock:
            self.started_ahead += 1

    def take(self) -> tuple[int, Future[PartResult]] | None:
        """The next range to write and the future of its result (the run's thread and the
        worker threads take from here)."""
        with self._lock:
            if not self._todo:
                return None
            index = self._todo.popleft()
            future: Future[PartResult] = Future()
            self.done[index] = future
            return index, future

    def stop(self) -> None:
        """No new range starts (one failed); those started finish."""
        with self._lock:
            self._todo.clear()

    def join_ready(self, writer: FileWriter, stats: RowStats) -> None:
        """Append the next ranges' files while they are ready, in order; a range's error is
        raised here, after every range before it (so it names the row in the whole file)."""
        while self.joined < len(self.ranges):
            future = self.done.get(self.joined)
            if future is None or not future.done():
                return
            try:
                result = future.result()
            except EncodingProblemError as exc:
                raise exc.after(writer.rows) from None
            path = self.paths[self.joined]
            with path.open("rb") as part:
                writer.append(part, rows=result.rows)
            stats.add(result.stats)
            path.unlink()
            self.joined += 1

    def next_pending(self) -> Future[PartResult] | None:
        """The result the joining waits for (None once every range is joined)."""
        if self.joined >= len(self.ranges):
            return None
        return self.done.get(self.joined)

    def finish(self) -> None:
        """After the run (or its failure): no range starts, those running end, no file of
        a range stays behind."""
        self.stop()
        wait(list(self.done.values()))
        for path in self.paths:
            path.unlink(missing_ok=True)


def send_message(out: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(struct.pack(">Q", len(data)) + data)
    out.flush()


def receive_message(source: IO[bytes]) -> Any:
    """The next message on a pipe between a run and the worker it started (None at its end).
    Only these two processes write to the pipe, with this code: no other party's bytes are
    ever unpickled."""
    head = source.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack(">Q", head)
    data = source.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # noqa: S301  # nosec B301


class _Worker:
    """A worker process (`python -m closedloop.feeds._part_worker`): a fresh interpreter,
    not a fork of the running one and its threads; once started it takes a run's job, then
    writes the ranges it is sent."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "closedloop.feeds._part_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        if self._process.stdin is None or self._process.stdout is None:  # pragma: no cover
            raise RuntimeError("a feed worker process has no pipes")
        self._in, self._out = self._process.stdin, self._process.stdout

    def _reply(self) -> Any:
        try:
            reply = receive_message(self._out)
        except Exception as exc:
            raise RuntimeError(f"a feed worker's answer could not be read: {exc}") from exc
        if reply is None:
            code = self._process.wait(timeout=30)
            raise RuntimeError(f"a feed worker process ended (exit code {code})")
        kind, value = reply
        if kind == "error":
            raise value
        return value

    def ready(self) -> None:
        """Wait until the worker has started (imported closedloop)."""
        self._reply()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def begin(self, job: PartJob) -> None:
        send_message(self._in, job)

    def write(self, bounds: Bounds, path: Path) -> PartResult:
        send_message(self._in, (bounds, str(path)))
        result: PartResult = self._reply()
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._out.close()


class _ReadyWorkers:
    """Worker processes started ahead of the next run, in a long-running process (a worker
    takes about a second to start: a run that finds one ready shares its ranges at once).
    A worker serves one run and ends with it; the next are started after the run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._starting = 0
        self._wanted = 0
        self.enabled = False  # (only long-running processes keep workers: `keep_workers_ready`)

    def want(self, count: int) -> None:
        """Keep `count` workers ready from now on (started in the background)."""
        with self._lock:
            if not self.enabled:
                return
            self._wanted = max(0, count)
            missing = self._wanted - len(self._idle) - self._starting
            self._starting += max(0, missing)
        for _ in range(missing):
            threading.Thread(
                target=self._start_one, name="closedloop-feed-worker-start", daemon=True
            ).start()

    def _start_one(self) -> None:
        worker: _Worker | None = None
        try:
            worker = _Worker()
            worker.ready()
        except Exception:  # noqa: BLE001 - a run starts its own instead
            _log.warning("feeds: a worker process did not start", exc_info=True)
            if worker is not None:
                worker.close()
            worker = None
        with self._lock:
            self._starting -= 1
            if worker is not None and self._wanted > len(self._idle):
                self._idle.append(worker)
                worker = None
        if worker is not None:  # (no longer wanted)
            worker.close()

    def take(self) -> _Worker | None:
        """A ready worker, if one is (one that ended while it waited is dropped)."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                worker = self._idle.pop()
            if worker.alive:
                return worker
            worker.close()

    def count(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._wanted, self.enabled = self._idle, [], 0, False
        for worker in idle:
            worker.close()


_ready = _ReadyWorkers()


def process_count(engine: Engine, settings: Settings) -> int:
    """How many processes write a full feed: `FEEDS__PROCESSES`, or for 0 one per core (at
    most 4). But for 0 on a PostgreSQL server on this machine whose rows are streamed, half
    as many: the server makes a process's rows on a core of its own while the process
    writes them, so one process and its server backend take two cores (on two cores one
    process wrote the 1M-row bench in 2.3 to 2.5 s, two in 2.9 to 3.1 s; docs/benchmarks.md)."""
    host = engine.url.host or ""
    local = host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")
    if not settings.feeds.processes and is_postgres(engine) and local and chunked_rows():
        return max(1, min((os.cpu_count() or 1) // 2, 4))
    return settings.feeds.process_count()


def keep_workers_ready(engine: Engine, settings: Settings) -> int:
    """For a long-running process (the scheduler in `closedloop serve`, `closedloop
    worker`): keep worker processes started for the next run written in parts, now if one
    of the store's recent runs was, and after each such run. How many are being started."""
    _ready.enabled = True
    count = process_count(engine, settings) - 1
    if count <= 0:
        return 0
    with engine.connect() as conn:
        recent = conn.execute(
            sa.select(feed_runs.c.stats)
            .where(feed_runs.c.state == "succeeded")
            .order_by(feed_runs.c.id.desc())
            .limit(50)
        ).scalars()
        if not any(isinstance(stats, dict) and stats.get("parts") for stats in recent):
            return 0
    _ready.want(count)
    return count


def stop_ready_workers() -> None:
    """End the workers kept ready (a long-running process that stops)."""
    _ready.close()


def ready_workers() -> int:
    """How many worker processes are started and waiting for a run."""
    return _ready.count()


def _drive(job: PartJob, ranges: _Ranges) -> None:
    """One worker process: one started ahead (`keep_workers_ready`) or started now, and once
    it is ready kept busy with the next range until none is left (a thread of the run's
    process per worker, waiting on the worker's pipe). A worker takes no range before it is
    ready, so a run whose own process writes every range before then does not wait for it."""
    worker: _Worker | None = None
    try:
        worker = _ready.take()
        if worker is not None:
            ranges.count_started_ahead()
        else:
            worker = _Worker()
            worker.ready()
        worker.begin(job)
        while (taken := ranges.take()) is not None:
            index, future = taken
            try:
                future.set_result(worker.write(ranges.ranges[index], ranges.paths[index]))
            except Exception as exc:  # noqa: BLE001 - raised in order by join_ready
                future.set_exception(exc)
                ranges.stop()
                return
    except Exception:  # noqa: BLE001 - a worker that does not start writes no range
        _log.warning("feeds: a worker process did not start", exc_info=True)
    finally:
        if worker is not None:
            worker.close()


def write_in_parts(
    engine: Engine,
    job: PartJob,
    writer: FileWriter,
    stats: RowStats,
    *,
    bounds: list[str],
    staged: Path,
    processes: int,
    renew: Callable[[], None],
    own_ranges: bool = True,
) -> dict[str, Any]:
    """Write the feed's rows into `writer` (which holds the header) with `processes`
    processes, the run's own among them, over the ranges `bounds` cut; what it did, for the
    run log. `own_ranges=False` leaves every range to the workers (tests)."""
    ranges = _Ranges(bounds, staged)
    workers = max(0, min(processes - 1, len(ranges.ranges) - (1 if own_ranges else 0)))
    drivers = [
        threading.Thread(
            target=_drive, args=(job, ranges), name=f"closedloop-feed-part-{n}", daemon=True
        )
        for n in range(workers)
    ]
    for driver in drivers:
        driver.start()
    mine = 0
    try:
        while own_ranges and (taken := ranges.take()) is not None:
            index, future = taken
            try:
                future.set_result(
                    write_range(job, ranges.ranges[index], ranges.paths[index], engine=engine)
                )
            except Exception as exc:  # noqa: BLE001 - raised in order by join_ready
                future.set_exception(exc)
                ranges.stop()
            mine += 1
            ranges.join_ready(writer, stats)
            renew()
        # Every range is taken: wait for the workers' ones, joining each when it is ready.
        while ranges.joined < len(ranges.ranges):
            pending = ranges.next_pending()
            if pending is None and not any(driver.is_alive() for driver in drivers):
                raise RuntimeError("no feed worker process started")  # (own_ranges=False)
            wait([pending] if pending is not None else [], timeout=1.0 if pending else 0.01)
            ranges.join_ready(writer, stats)
            renew()
    finally:
        ranges.finish()
        _ready.want(processes - 1)  # (for the next run, in a process that keeps them)
    peaks = [
        result.peak_kb
        for future in ranges.done.values()
        if future.exception() is None
        if (result := future.result()).peak_kb is not None
    ]
    return {
        "processes": workers + 1,
        "ranges": len(ranges.ranges),
        "ranges_in_run_process": mine,
        "workers_started_ahead": ranges.started_ahead,
        "worker_peak_mb": round(max(peaks) / 1024, 1) if peaks else None,
    }

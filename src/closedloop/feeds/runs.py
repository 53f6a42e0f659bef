"""Feed runs: scheduled or by hand, leased, streamed, delivered once, logged.

A run is a row in `feed_runs` (queued -> running -> succeeded | failed). The scheduler
queues one run per due firing of a feed's cron schedule (compare-and-set on
`feeds.next_run_at` plus a unique `(feed, run_key)`, so N workers queue it once). A worker
takes a run by taking its feed's lease (`feeds.lease_until`): two workers never run the
same feed at once. The lease is extended while the run streams; a run whose worker died is
taken over, with the same run id and so the same file name, when its lease has expired.

A run writes its file as rows are read (flat memory), then delivers it under a temporary
name and renames it. Transient delivery faults are retried with exponential backoff.

Delta runs compare each row with what the feed's last successful run delivered
(`feed_rows`, merged in profile-id order): new and changed rows are upserts, rows that are
gone (left the segment, lost consent, erased) are deletes carrying only the key. The rows of
a run become the feed's reference only when the run succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.feeds._tables import feed_rows, feed_runs, feeds
from closedloop.feeds.definition import (
    FeedDefinition,
    JsonlFormat,
    WebhookDestination,
    parse_feed,
    render_file_name,
)
from closedloop.feeds.destinations import DeliveryError, deliver, staging_path
from closedloop.feeds.formats import cell_text, open_writer
from closedloop.feeds.parts import (
    PartJob,
    keep_workers_ready,
    process_count,
    range_bounds,
    stop_ready_workers,
    write_in_parts,
)
from closedloop.feeds.rows import FeedRow, RowStats, column_names, feed_columns
from closedloop.feeds.rows import feed_rows as select_rows
from closedloop.feeds.store import check_sources
from closedloop.runtime import PeriodicLoop
from closedloop.segments._tables import segments as segments_table
from closedloop.store import begin_write, is_postgres

__all__ = [
    "FeedRun",
    "FeedScheduler",
    "Preview",
    "execute_due",
    "get_run",
    "list_runs",
    "preview",
    "queue_run",
    "run_now",
    "schedule_due",
]

_log = logging.getLogger(__name__)
_CHUNK = 2000
_SNAPSHOT_BATCH = 5000
_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class FeedRun:
    id: str
    feed: str
    trigger: str
    state: str
    attempts: int
    scheduled_for: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    file_name: str | None
    rows: int | None
    bytes: int | None
    checksum: str | None
    stats: dict[str, Any] | None
    error: str | None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)

    def as_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "feed": self.feed,
            "trigger": self.trigger,
            "state": self.state,
            "attempts": self.attempts,
            "scheduled_for": iso(self.scheduled_for),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "file_name": self.file_name,
            "rows": self.rows,
            "bytes": self.bytes,
            "checksum": self.checksum,
            "stats": self.stats,
            "error": self.error,
        }


def _run_of(row: Any) -> FeedRun:
    return FeedRun(
        id=row.id,
        feed=row.feed,
        trigger=row.trigger,
        state=row.state,
        attempts=row.attempts,
        scheduled_for=row.scheduled_for,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        file_name=row.file_name,
        rows=row.rows,
        bytes=row.bytes,
        checksum=row.checksum,
        stats=row.stats,
        error=row.error,
    )


def _definition(conn: sa.Connection, name: str) -> FeedDefinition:
    document = conn.execute(sa.select(feeds.c.definition).where(feeds.c.name == name)).scalar()
    if document is None:
        raise NotFoundError(f"no feed `{name[:64]}`: see `closedloop feeds list`")
    return parse_feed(document)


def list_runs(engine: Engine, name: str, *, limit: int = 50) -> list[FeedRun]:
    with engine.connect() as conn:
        _definition(conn, name)
        rows = conn.execute(
            sa.select(feed_runs)
            .where(feed_runs.c.feed == name)
            .order_by(feed_runs.c.created_at.desc(), feed_runs.c.id.desc())
            .limit(limit)
        ).all()
    return [_run_of(r) for r in rows]


def get_run(engine: Engine, name: str, run_id: str) -> FeedRun:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(feed_runs).where(feed_runs.c.feed == name, feed_runs.c.id == run_id)
        ).first()
    if row is None:
        raise NotFoundError(f"no run `{run_id[:40]}` of feed `{name[:64]}`")
    return _run_of(row)


def _new_run_id() -> str:
    return f"run_{secrets.token_hex(8)}"


def queue_run(engine: Engine, name: str, *, trigger: str = "manual") -> FeedRun:
    """Queue a run now (the scheduler of `serve` or a `worker` takes it)."""
    now = clock.now()
    run_id = _new_run_id()
    with begin_write(engine) as conn:
        _definition(conn, name)
        conn.execute(
            feed_runs.insert().values(
                id=run_id,
                feed=name,
                run_key=f"{trigger}-{run_id}",
                trigger=trigger,
                state="queued",
                attempts=0,
                scheduled_for=now,
                created_at=now,
            )
        )
        row = conn.execute(sa.select(feed_runs).where(feed_runs.c.id == run_id)).one()
    return _run_of(row)


def schedule_due(engine: Engine, *, now: datetime | None = None) -> int:
    """Queue one run for each feed whose schedule is due; returns how many were queued.

    Missed firings (the hub was down for days) give one run, not one per firing: a feed
    delivers the current state, and a delta run covers all changes since the last one.
    """
    now = now or clock.now()
    queued = 0
    with engine.connect() as conn:
        rows = conn.execute(sa.select(feeds.c.name, feeds.c.definition, feeds.c.next_run_at)).all()
    for name, document, next_run_at in rows:
        try:
            schedule = parse_feed(document).schedule
        except InvalidInputError:
            _log.warning("feeds: `%s` has an invalid stored definition; not scheduled", name)
            continue
        if schedule is None:
            continue
        if next_run_at is None:
            with begin_write(engine) as conn:
                conn.execute(
                    feeds.update()
                    .where(feeds.c.name == name, feeds.c.next_run_at.is_(None))
                    .values(next_run_at=schedule.next_after(now).astimezone(UTC))
                )
            continue
        if next_run_at > now:
            continue
        following = schedule.next_after(now).astimezone(UTC)
        with begin_write(engine) as conn:
            moved = conn.execute(
                feeds.update()
                .where(feeds.c.name == name, feeds.c.next_run_at == next_run_at)
                .values(next_run_at=following)
            ).rowcount
            if moved != 1:
                continue  # another worker queued this firing
            run_id = _new_run_id()
            conn.execute(
                feed_runs.insert().values(
                    id=run_id,
                    feed=name,
                    run_key=f"schedule-{next_run_at.astimezone(UTC).isoformat()}",
                    trigger="schedule",
                    state="queued",
                    attempts=0,
                    scheduled_for=next_run_at,
                    created_at=now,
                )
            )
            queued += 1
    return queued


# Leases -----------------------------------------------------------------------------------


class _LostLeaseError(Exception):
    pass


@dataclass
class _Lease:
    engine: Engine
    feed: str
    token: str
    seconds: float
    renewed: float = 0.0

    def renew(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self.renewed < self.seconds / 3:
            return
        with begin_write(self.engine) as conn:
            moved = conn.execute(
                feeds.update()
                .where(feeds.c.name == self.feed, feeds.c.lease_token == self.token)
                .values(lease_until=clock.now() + timedelta(seconds=self.seconds))
            ).rowcount
        if moved != 1:
            raise _LostLeaseError(f"the lease of feed `{self.feed}` was taken over")
        self.renewed = time.monotonic()


def _take(engine: Engine, settings: Settings, run_id: str, feed: str) -> _Lease | None:
    """Take the feed's lease and start the run; None when another worker holds it."""
    now = clock.now()
    token = secrets.token_hex(16)
    until = now + timedelta(seconds=settings.feeds.lease_seconds)
    with begin_write(engine) as conn:
        taken = conn.execute(
            feeds.update()
            .where(
                feeds.c.name == feed,
                sa.or_(feeds.c.lease_until.is_(None), feeds.c.lease_until < now),
            )
            .values(lease_token=token, lease_until=until)
        ).rowcount
        if taken != 1:
            return None
        started = conn.execute(
            feed_runs.update()
            .where(feed_runs.c.id == run_id, feed_runs.c.state.in_(("queued", "running")))
            .values(
                state="running",
                attempts=feed_runs.c.attempts + 1,
                started_at=now,
                finished_at=None,
                error=None,
            )
        ).rowcount
        if started != 1:
            conn.execute(
                feeds.update()
                .where(feeds.c.name == feed, feeds.c.lease_token == token)
                .values(lease_token=None, lease_until=None)
            )
            return None
    return _Lease(engine, feed, token, settings.feeds.lease_seconds, time.monotonic())


def _finish(
    lease: _Lease,
    run_id: str,
    values: dict[str, Any],
    *,
    delta_run: str | None = None,
) -> None:
    with begin_write(lease.engine) as conn:
        released = conn.execute(
            feeds.update()
            .where(feeds.c.name == lease.feed, feeds.c.lease_token == lease.token)
            .values(
                lease_token=None,
                lease_until=None,
                **({"delta_run": delta_run} if delta_run is not None else {}),
            )
        ).rowcount
        if released != 1:
            raise _LostLeaseError(f"the lease of feed `{lease.feed}` was taken over")
        conn.execute(
            feed_runs.update()
            .where(feed_runs.c.id == run_id)
            .values(finished_at=clock.now(), **values)
        )
        if delta_run is not None:
            conn.execute(
                feed_rows.delete().where(
                    feed_rows.c.feed == lease.feed, feed_rows.c.run_id != delta_run
                )
            )


# Rows, delta and files --------------------------------------------------------------------


def _hash(cells: list[Any]) -> str:
    text = "\x1f".join(cell_text(c) for c in cells)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _previous(conn: sa.Connection, feed: str, run_id: str | None) -> Iterator[Any]:
    if run_id is None:
        return iter(())
    order = feed_rows.c.profile_id
    if is_postgres(conn.engine):
        order = order.collate("C")  # type: ignore[assignment]
    stmt = (
        sa.select(feed_rows.c.profile_id, feed_rows.c.row_key, feed_rows.c.row_hash)
        .where(feed_rows.c.feed == feed, feed_rows.c.run_id == run_id)
        .order_by(order)
    )
    return iter(conn.execution_options(stream_results=True, yield_per=_CHUNK).execute(stmt))


@dataclass
class _DeltaCounts:
    entered: int = 0
    changed: int = 0
    unchanged: int = 0
    left: int = 0


def _delta(
    current: Iterator[FeedRow],
    previous: Iterator[Any],
    width: int,
    key_index: int,
    counts: _DeltaCounts,
    keep: Callable[[str, str, str], None],
) -> Iterator[tuple[str, list[Any]]]:
    """("upsert" | "delete", cells) from a merge of the current rows and the last run's."""

    def delete(key: str) -> tuple[str, list[Any]]:
        cells: list[Any] = [None] * width
        cells[key_index] = key
        counts.left += 1
        return "delete", cells

    old = next(previous, None)
    for row in current:
        while old is not None and old.profile_id < row.profile_id:
            yield delete(old.row_key)
            old = next(previous, None)
        digest = _hash([row.key, *row.cells])
        keep(row.profile_id, row.key, digest)
        if old is not None and old.profile_id == row.profile_id:
            if old.row_key != row.key:
                yield delete(old.row_key)
                counts.left -= 1
                counts.changed += 1
                yield "upsert", row.cells
            elif old.row_hash != digest:
                counts.changed += 1
                yield "upsert", row.cells
            else:
                counts.unchanged += 1
            old = next(previous, None)
            continue
        counts.entered += 1
        yield "upsert", row.cells
    while old is not None:
        yield delete(old.row_key)
        old = next(previous, None)


class _Snapshot:
    """The rows of this delta run, written in batches on their own connection."""

    def __init__(self, engine: Engine, feed: str, run_id: str) -> None:
        self._engine = engine
        self._feed = feed
        self._run = run_id
        self._pending: list[dict[str, Any]] = []
        with begin_write(engine) as conn:  # a run taken over starts its rows again
            conn.execute(
                feed_rows.delete().where(feed_rows.c.feed == feed, feed_rows.c.run_id == run_id)
            )

    def keep(self, profile_id: str, key: str, digest: str) -> None:
        self._pending.append(
            {
                "feed": self._feed,
                "run_id": self._run,
                "profile_id": profile_id,
                "row_key": key[:255],
                "row_hash": digest,
            }
        )
        if len(self._pending) >= _SNAPSHOT_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            with begin_write(self._engine) as conn:
                conn.execute(feed_rows.insert(), self._pending)
            self._pending = []


def _business_time(definition: FeedDefinition, moment: datetime) -> datetime:
    zone = definition.schedule.timezone if definition.schedule else "Europe/Berlin"
    return moment.astimezone(ZoneInfo(zone))


def _write(
    engine: Engine,
    settings: Settings,
    definition: FeedDefinition,
    run_id: str,
    staged: Path,
    lease: _Lease,
    now: datetime,
) -> tuple[int, int, str, dict[str, Any]]:
    """Write the run's file; (rows, bytes, sha256, stats)."""
    stats = RowStats()
    names = column_names(definition)
    delta = definition.mode == "delta"
    counts = _DeltaCounts()
    # A webhook posts rows as JSON objects, whatever the file format says.
    webhook = isinstance(definition.destination, WebhookDestination)
    fmt = JsonlFormat() if webhook else definition.format
    header = [definition.delta.action_column, *names] if delta else names
    parts: dict[str, Any] | None = None
    with engine.connect() as conn:
        check_sources(conn, definition)
        base_run = None
        if delta:
            base_run = conn.execute(
                sa.select(feeds.c.delta_run).where(feeds.c.name == definition.name)
            ).scalar()
        with staged.open("wb") as out:
            writer = open_writer(out, fmt, header)
            chunk: list[list[Any]] = []
            if delta:
                rows = select_rows(conn, definition, settings, now=now, stats=stats)
                snapshot = _Snapshot(engine, definition.name, run_id)
                key_index = next(
                    i for i, c in enumerate(definition.columns) if c.source == definition.key
                )
                with engine.connect() as previous_conn:
                    actions = {"upsert": definition.delta.upsert, "delete": definition.delta.delete}
                    for action, cells in _delta(
                        rows,
                        _previous(previous_conn, definition.name, base_run),
                        len(names),
                        key_index,
                        counts,
                        snapshot.keep,
                    ):
                        chunk.append([actions[action], *cells])
                        if len(chunk) >= _CHUNK:
                            writer.write(chunk)
                            chunk = []
                            lease.renew()
                snapshot.flush()
            else:
                processes = process_count(engine, settings)
                bounds = (
                    range_bounds(conn, definition, rows=settings.feeds.range_rows)
                    if processes > 1
                    else []
                )
                if bounds:
                    job = PartJob(settings, definition, fmt, tuple(header), now)
                    parts = write_in_parts(
                        engine,
                        job,
                        writer,
                        stats,
                        bounds=bounds,
                        staged=staged,
                        processes=processes,
                        renew=lease.renew,
                    )
                else:
                    chunks = feed_columns(conn, definition, settings, now=now, stats=stats)
                    with contextlib.closing(chunks):
                        for columns in chunks:
                            writer.write_columns(columns)
                            lease.renew()
            if chunk:
                writer.write(chunk)
            out.flush()
    info = stats.as_json()
    if parts is not None:
        info["parts"] = parts
    if delta:
        info.update(
            entered=counts.entered,
            changed=counts.changed,
            unchanged=counts.unchanged,
            left=counts.left,
            compared_with=base_run,
        )
    return writer.rows, writer.bytes, writer.sha256, info


def _deliver_with_retries(
    definition: FeedDefinition,
    settings: Settings,
    staged: Path,
    *,
    name: str,
    checksum: str,
    run_id: str,
    lease: _Lease,
    stop: threading.Event | None,
) -> tuple[str, int]:
    attempt = 0
    while True:
        try:
            where = deliver(
                definition.destination,
                settings,
                staged,
                name=name,
                checksum=checksum,
                run_id=run_id,
                feed=definition.name,
            )
            return where, attempt
        except DeliveryError as exc:
            if not exc.transient or attempt >= settings.feeds.retries:
                raise
            delay = settings.feeds.backoff_seconds * (2**attempt)
            _log.warning(
                "feeds: `%s` run %s: %s; retry %d in %.1f s",
                definition.name,
                run_id,
                exc.message,
                attempt + 1,
                delay,
            )
            attempt += 1
            (stop or threading.Event()).wait(delay)
            lease.renew(force=True)


def _execute(
    engine: Engine,
    settings: Settings,
    run: FeedRun,
    lease: _Lease,
    stop: threading.Event | None,
) -> FeedRun:
    started = time.monotonic()
    staged: Path | None = None
    try:
        with engine.connect() as conn:
            definition = _definition(conn, run.feed)
        now = clock.now()
        business = _business_time(definition, run.scheduled_for)
        name = (
            render_file_name(definition.file_name, feed=definition.name, run=run.id, at=business)
            + definition.extension
        )
        staged = staging_path(definition.destination, settings, definition.name, run.id)
        rows, size, checksum, stats = _write(
            engine, settings, definition, run.id, staged, lease, now
        )
        where, retries = _deliver_with_retries(
            definition,
            settings,
            staged,
            name=name,
            checksum=checksum,
            run_id=run.id,
            lease=lease,
            stop=stop,
        )
        stats.update(
            destination=where, retries=retries, seconds=round(time.monotonic() - started, 3)
        )
        _finish(
            lease,
            run.id,
            {
                "state": "succeeded",
                "file_name": name,
                "rows": rows,
                "bytes": size,
                "checksum": checksum,
                "stats": stats,
            },
            delta_run=run.id if definition.mode == "delta" else None,
        )
    except _LostLeaseError:
        _log.warning(
            "feeds: run %s of `%s` lost its lease; another worker redoes it", run.id, run.feed
        )
        raise
    except (DeliveryError, InvalidInputError, NotFoundError) as exc:
        message = exc.message
        _fail(lease, run.id, message)
    except Exception as exc:  # noqa: BLE001 - a run's failure is logged, never the worker's
        _log.exception("feeds: run %s of `%s` failed", run.id, run.feed)
        _fail(lease, run.id, f"internal error: {type(exc).__name__}")
    finally:
        if staged is not None:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
    return get_run(engine, run.feed, run.id)


def _members_as_of(engine: Engine, definition: FeedDefinition) -> str | None:
    """When the source segments' members were last refreshed (the server and workers refresh
    them seconds after new events, and all of them every `SEGMENTS__REFRESH_SECONDS`)."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(sa.func.min(segments_table.c.refreshed_at)).where(
                segments_table.c.name.in_(definition.source.segments)
            )
        ).scalar()
    return found.isoformat() if found is not None else None


def _fail(lease: _Lease, run_id: str, message: str) -> None:
    with contextlib.suppress(_LostLeaseError):
        _finish(lease, run_id, {"state": "failed", "error": message[:2000]})
    with begin_write(lease.engine) as conn:  # a failed delta run's rows are not the reference
        conn.execute(
            feed_rows.delete().where(feed_rows.c.feed == lease.feed, feed_rows.c.run_id == run_id)
        )


def _candidates(engine: Engine, now: datetime, only: str | None) -> list[FeedRun]:
    stmt = (
        sa.select(feed_runs)
        .select_from(feed_runs.join(feeds, feeds.c.name == feed_runs.c.feed))
        .where(
            sa.or_(
                feed_runs.c.state == "queued",
                sa.and_(
                    feed_runs.c.state == "running",
                    sa.or_(feeds.c.lease_until.is_(None), feeds.c.lease_until < now),
                ),
            )
        )
        .order_by(feed_runs.c.created_at, feed_runs.c.id)
        .limit(100)
    )
    if only is not None:
        stmt = stmt.where(feed_runs.c.id == only)
    with engine.connect() as conn:
        return [_run_of(r) for r in conn.execute(stmt)]


def execute_due(
    engine: Engine,
    settings: Settings,
    *,
    only: str | None = None,
    stop: threading.Event | None = None,
) -> list[FeedRun]:
    """Run the queued runs (and take over runs whose worker died); the runs done."""
    done: list[FeedRun] = []
    busy: set[str] = set()
    for run in _candidates(engine, clock.now(), only):
        if stop is not None and stop.is_set():
            break
        if run.feed in busy:
            continue
        if run.state == "running" and run.attempts >= _MAX_ATTEMPTS:
            with begin_write(engine) as conn:
                conn.execute(
                    feed_runs.update()
                    .where(feed_runs.c.id == run.id, feed_runs.c.state == "running")
                    .values(
                        state="failed",
                        finished_at=clock.now(),
                        error=f"gave up after {run.attempts} attempts: the worker stopped "
                        "during each",
                    )
                )
            continue
        lease = _take(engine, settings, run.id, run.feed)
        if lease is None:
            busy.add(run.feed)
            continue
        try:
            done.append(_execute(engine, settings, run, lease, stop))
        except _LostLeaseError:
            continue
    return done


def run_now(
    engine: Engine, settings: Settings, name: str, *, stop: threading.Event | None = None
) -> FeedRun:
    """Queue a run of `name` and run it in this process (`closedloop feeds run`).

    When a server's or worker's scheduler takes the queued run first, this waits for that
    run and answers it; when the feed is busy with another run, ConflictError.
    """
    run = queue_run(engine, name)
    done = execute_due(engine, settings, only=run.id, stop=stop)
    if done:
        return done[0]
    with begin_write(engine) as conn:
        still_queued = conn.execute(
            feed_runs.update()
            .where(feed_runs.c.id == run.id, feed_runs.c.state == "queued")
            .values(state="failed", finished_at=clock.now(), error="the feed was running")
        ).rowcount
    if still_queued:
        raise ConflictError(
            f"feed `{name}` is running in another worker: see `closedloop feeds runs {name}`"
        )
    deadline = time.monotonic() + settings.feeds.lease_seconds * 3
    found = get_run(engine, name, run.id)
    while found.state == "running" and time.monotonic() < deadline:
        (stop or threading.Event()).wait(0.1)
        found = get_run(engine, name, run.id)
    return found


# Preview ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    columns: list[str]
    rows: list[list[str]]
    stats: dict[str, Any]


def preview(engine: Engine, settings: Settings, name: str, *, rows: int = 10) -> Preview:
    """The first rows of a full run as they would be written (nothing stored, nothing sent)."""
    with engine.connect() as conn:
        definition = _definition(conn, name)
        stats = RowStats()
        found: list[list[str]] = []
        for row in select_rows(conn, definition, settings, now=clock.now(), stats=stats):
            found.append([cell_text(c) for c in row.cells])
            if len(found) >= rows:
                break
    return Preview(column_names(definition), found, stats.as_json())


# The scheduler thread ---------------------------------------------------------------------


class FeedScheduler(PeriodicLoop):
    """Queues due runs and runs them inside `closedloop serve`, every `FEEDS__POLL_SECONDS`
    or at once when woken (a run queued through the API)."""

    name = "closedloop-feeds"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__(settings.feeds.poll_seconds)
        self._engine = engine
        self._settings = settings
        self._first = True

    def run_once(self) -> None:
        if self._first:  # big feeds' worker processes started ahead of their runs
            keep_workers_ready(self._engine, self._settings)
            self._first = False
        schedule_due(self._engine)
        execute_due(self._engine, self._settings, stop=self.stopping)

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)
        stop_ready_workers()

"""Committing a group of requests' rows in one transaction.

`Committer` appends every request of a group at once and tells each request what became of
its rows; it raises `TransientError` for faults that may pass (the caller answers 503).
`GroupCommitter` is the interface the group-commit writer needs (tests hand it a committer
that fails on purpose).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.errors import TransientError
from closedloop.ingest import log

__all__ = [
    "AppendResult",
    "CommitOutcome",
    "Committer",
    "GroupCommitter",
    "RequestRows",
    "is_transient_db_error",
]

_log = logging.getLogger(__name__)

# One request's event rows and failed rows (column orders: EVENT_COLUMNS, FAILED_COLUMNS).
RequestRows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class AppendResult:
    """What became of one request's rows."""

    inserted: int
    duplicates: int
    store_rejected: tuple[int, ...] = ()  # indexes into the request's rows the store refused
    store_reason: str = ""


@dataclass(frozen=True)
class CommitOutcome:
    """The results of a group, in request order, with the commit's time and size."""

    results: list[AppendResult]
    seconds: float
    events: int


class GroupCommitter(Protocol):
    def commit(self, group: Sequence[RequestRows]) -> CommitOutcome: ...


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether a database error may pass (connection lost, locked, server down)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError)


class Committer:
    """Appends a group in one transaction; refused rows go to failed events, never lost."""

    def __init__(self, engine: Engine, *, retry_after: int) -> None:
        self._engine = engine
        self._retry_after = retry_after

    def _unavailable(self, exc: BaseException) -> TransientError:
        _log.warning("store unavailable during group commit: %s", type(exc).__name__)
        return TransientError(
            "the event store is unavailable: retry later", retry_after=self._retry_after
        )

    def commit(self, group: Sequence[RequestRows]) -> CommitOutcome:
        started = time.perf_counter()
        all_rows = [row for rows, _ in group for row in rows]
        all_failed = [row for _, failed in group for row in failed]
        try:
            alone = None if all_failed else log.append_alone(self._engine, all_rows)
            if alone is not None:
                inserted = alone
            else:
                with self._engine.begin() as conn:
                    inserted = log.append(conn, all_rows, all_failed)
        except sa.exc.SQLAlchemyError as exc:
            if is_transient_db_error(exc):
                raise self._unavailable(exc) from exc
            _log.warning(
                "group commit refused by the store (%s); committing one by one",
                type(getattr(exc, "orig", None) or exc).__name__,
            )
            results = [self._commit_alone(rows, failed) for rows, failed in group]
            return CommitOutcome(results, time.perf_counter() - started, len(all_rows))
        seconds = time.perf_counter() - started
        if len(group) == 1:
            return CommitOutcome(
                [AppendResult(inserted, len(all_rows) - inserted)], seconds, len(all_rows)
            )
        # Multi-row INSERT and COPY report only the group's total of new rows; duplicates come
        # from SDK retries, so give each request its share in order (exact when there are none).
        duplicates = len(all_rows) - inserted
        results = []
        for rows, _ in group:
            own_dups = min(duplicates, len(rows))
            duplicates -= own_dups
            results.append(AppendResult(len(rows) - own_dups, own_dups))
        return CommitOutcome(results, seconds, len(all_rows))

    def _commit_alone(
        self, rows: list[tuple[Any, ...]], failed: list[tuple[Any, ...]]
    ) -> AppendResult:
        """One request on its own, then row by row if the store still refuses it."""
        try:
            with self._engine.begin() as conn:
                inserted = log.append(conn, rows, failed)
            return AppendResult(inserted, len(rows) - inserted)
        except sa.exc.SQLAlchemyError as exc:
            if is_transient_db_error(exc):
                raise self._unavailable(exc) from exc
            orig = getattr(exc, "orig", None) or exc
            reason = f"the store refused the event ({type(orig).__name__})"
        inserted = duplicates = 0
        refused: list[int] = []
        kept_failed = list(failed)
        for index, row in enumerate(rows):
            try:
                with self._engine.begin() as conn:
                    new = log.append(conn, [row])
                inserted += new
                duplicates += 1 - new
            except sa.exc.SQLAlchemyError as exc:
                if is_transient_db_error(exc):
                    raise self._unavailable(exc) from exc
                refused.append(index)
                kept_failed.append(log.failed_row_from_event(row, origin="store", reason=reason))
        try:
            with self._engine.begin() as conn:
                log.append(conn, [], kept_failed)
        except sa.exc.SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc
        return AppendResult(inserted, duplicates, tuple(refused), reason)

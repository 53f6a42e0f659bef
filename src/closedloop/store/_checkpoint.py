"""SQLite: the WAL checkpointed by a thread of its own instead of by the writers' commits.

SQLite's default checkpoint runs inside the commit that takes the WAL past 1,000 pages: that
writer copies every page of the WAL into the database file and syncs it before its call
returns. At 1M profiles a processor batch writes some 15,000 random pages, so each batch
paid for its own checkpoint (ADR 0014). Here the writers' commits only append to the WAL; a
thread copies the pages meanwhile (`PASSIVE`: it never blocks a reader or a writer) on a
core of its own, since SQLite leaves Python's lock while it works.

A passive checkpoint cannot rewind the WAL while writers follow each other without a pause,
so once the WAL holds `restart_pages` (256 MB; at 64 MB the restarts held the processor
back often enough to cost a third of the gain) the thread asks for a `RESTART`: it waits (at most
`restart_wait` seconds) for the running writer, copies what is left, and the next writer
starts the WAL again from its beginning. New writers wait meanwhile. Should the thread fall
behind or stop, every connection still checkpoints by itself past `fallback_pages`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["WalCheckpointer"]

log = logging.getLogger(__name__)

_PAGE_BYTES = 4096  # SQLite's page size
# How far the WAL passes the restart point before the restart: about one processor batch at
# 1M profiles (some 15,000 pages).
_BATCH_BYTES = 64 * 1024 * 1024


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite file `path` after commits (`notify`) and every
    `interval` seconds, from a daemon thread started on the first `notify`."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        restart_pages: int = 65_536,
        fallback_pages: int = 262_144,
        interval: float = 1.0,
        restart_wait: float = 0.5,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.restart_pages = restart_pages
        self.fallback_pages = fallback_pages
        self.interval = interval
        self.restart_wait = restart_wait
        self.passive = 0  # checkpoints run, for tests and metrics
        self.restarts = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def kept_bytes(self) -> int:
        """The size the WAL file keeps when a writer starts the WAL again
        (`journal_size_limit`): the restart point and one batch more, so writers write over
        the file's pages instead of growing it page by page (ADR 0014, addendum)."""
        return self.restart_pages * _PAGE_BYTES + _BATCH_BYTES

    def notify(self) -> None:
        """A transaction committed: checkpoint soon."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="closedloop-wal-checkpoint", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            log.exception("WAL checkpointer: cannot open %s; writers checkpoint alone", self.path)
            return
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self.restart_wait * 1000)}")
            while not self._stop.is_set():
                self._wake.wait(self.interval)
                self._wake.clear()
                if self._stop.is_set():
                    break
                self.checkpoint(conn)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """One passive checkpoint, then a restart when the WAL has grown past its limit."""
        try:
            _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.passive += 1
            if frames >= self.restart_pages:
                busy, _frames, _copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                self.restarts += 0 if busy else 1
        except sqlite3.Error as exc:  # a locked or busy store: the next round tries again
            log.warning("WAL checkpoint of %s failed: %s", self.path, exc)

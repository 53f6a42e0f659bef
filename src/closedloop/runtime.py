"""Process-level helpers shared by the long loops (the processor, feed runs)."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "CollectorPause",
    "PeriodicLoop",
    "cyclic_gc_paused",
    "lower_priority",
    "short_switch_interval",
    "thread_priority",
]

_log = logging.getLogger(__name__)


class CollectorPause:
    """The cyclic garbage collector paused over a whole loop of batches (a drain), not one
    batch at a time: where it resumed after each batch, the objects the batches kept (the
    processor's cached states) soon set off a collection of the oldest generation, which
    walks every object of the process (measured: 9 % of a demo drain). `between` (called
    between two batches) collects the young generations once every `seconds`, so a loop that
    never ends still frees its cycles; the collector's own schedule resumes at the end."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._collecting = False
        self._since = 0.0

    def __enter__(self) -> CollectorPause:
        self._collecting = gc.isenabled()
        gc.disable()
        self._since = time.monotonic()
        return self

    def between(self) -> None:
        if self._collecting and time.monotonic() - self._since >= self.seconds:
            gc.collect(1)
            self._since = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        if self._collecting:
            gc.enable()


def cyclic_gc_paused() -> CollectorPause:
    """Pause the cyclic garbage collector for a loop that makes many small acyclic objects
    (rows, states): reference counting frees them, and the collector would otherwise walk
    every live object again and again (measured: 30 % of a processor batch, 25 % of a feed
    run). Cycles made meanwhile wait for the next collection (the pause never collects)."""
    return CollectorPause(math.inf)


class _SwitchInterval:
    """The interpreter's switch interval, shortened while any user needs it (counted, so
    that overlapping users restore it once, after the last)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before = sys.getswitchinterval()

    @contextmanager
    def shortened(self, seconds: float) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._before = sys.getswitchinterval()
                sys.setswitchinterval(min(seconds, self._before))
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    sys.setswitchinterval(self._before)


_SWITCH = _SwitchInterval()


def short_switch_interval(seconds: float) -> contextlib.AbstractContextManager[None]:
    """While a thread works mostly inside C code that runs without the GIL (SQLite), and
    another runs Python: each time the first comes back for the GIL it waits until the
    other gives it up, after the switch interval (5 ms by default). A few dozen such waits
    a batch doubled the processor's pipelined writes (ADR 0017). Shortened, the wait is
    short; the cost is a switch only when a thread waits."""
    return _SWITCH.shortened(seconds)


def thread_priority() -> int:
    """The calling thread's nice value (Linux schedules threads by their own); 0 elsewhere."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0


def lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority to `nice` (never raise it): a background
    loop that may use every core (the processor's pipeline) then leaves the CPU to the
    API's threads when they have work. Linux only; elsewhere nothing happens."""
    try:
        if nice > thread_priority():
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        _log.debug("thread priority unchanged")


class PeriodicLoop:
    """A daemon thread that calls `run_once` every `interval` seconds (the first call after
    one interval, so a starting server is not raced), sooner when woken; an error is logged
    and the next pass tries again. `stop` ends it after the current pass."""

    name = "closedloop-loop"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - keep going; the next pass retries
                _log.exception("%s: a pass failed; retrying", self.name)

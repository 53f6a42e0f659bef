"""The one place that reads the time.

Everything inside closedloop is timezone-aware UTC. Tests and `--now` replace the clock with
`set_clock`, so no other module calls `datetime.now()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

__all__ = ["frozen", "now", "set_clock"]


def _system_now() -> datetime:
    return datetime.now(UTC)


_clock: Callable[[], datetime] = _system_now


def now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return _clock()


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Replace the clock (None restores the system clock)."""
    global _clock
    _clock = clock or _system_now


@contextmanager
def frozen(at: datetime) -> Iterator[None]:
    """Freeze the clock at `at` (must be timezone-aware) for the duration of the block."""
    if at.tzinfo is None:
        raise ValueError("frozen() needs a timezone-aware datetime")
    previous = _clock
    set_clock(lambda: at)
    try:
        yield
    finally:
        set_clock(previous)

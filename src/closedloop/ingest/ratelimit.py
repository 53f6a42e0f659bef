"""Rate limits per source: a token bucket per source in this process.

Each source may send `rate_limit_events_per_second` events per second with bursts up to
`rate_limit_burst`; a request that would go over is refused whole with 429 and the seconds
until it would fit in `Retry-After` (SDKs retry 429). A batch larger than the burst passes
when the bucket is full, so no request is refused for ever. With several server processes
each has its own buckets: the limit is per process.
"""

from __future__ import annotations

import math
import threading
import time

from closedloop.config import IngestSettings
from closedloop.errors import RateLimitedError

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, limits: IngestSettings) -> None:
        self.rate = limits.rate_limit_events_per_second
        self.burst = float(limits.rate_limit_burst or max(1.0, self.rate * 10))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, source: str, events: int) -> None:
        """Take `events` from the source's bucket, or raise `RateLimitedError`."""
        if self.rate <= 0 or events <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(source, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if events > tokens and tokens < self.burst:
                self._buckets[source] = (tokens, now)
                wait = math.ceil((min(events, self.burst) - tokens) / self.rate)
                raise RateLimitedError(
                    f"source `{source}` sends more than {self.rate:g} events/s: retry in {wait} s",
                    retry_after=max(1, wait),
                )
            self._buckets[source] = (tokens - events, now)

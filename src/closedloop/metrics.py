"""Prometheus metrics, one registry per running app (so tests can run several apps)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["Metrics"]

disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The counters and gauges closedloop exports at `GET /metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._accepted: dict[str, Any] = {}
        r = self.registry
        self.events_accepted = Counter(
            "closedloop_events_accepted",
            "Events newly stored in the event log.",
            ["source"],
            registry=r,
        )
        self.events_deduplicated = Counter(
            "closedloop_events_deduplicated",
            "Events acknowledged but not stored again: (source, messageId) seen before.",
            ["source"],
            registry=r,
        )
        self.events_failed = Counter(
            "closedloop_events_failed",
            "Events rejected by validation (kept in failed_events or answered with 4xx).",
            ["source", "reason"],
            registry=r,
        )
        self.requests_rejected = Counter(
            "closedloop_tracking_requests_rejected",
            "Tracking requests answered with an error status.",
            ["status"],
            registry=r,
        )
        self.suppressed_events = Counter(
            "closedloop_suppressed_events",
            "Events of erased people acknowledged and dropped (where: tracking or processor).",
            ["where"],
            registry=r,
        )
        self.client_retries = Counter(
            "closedloop_tracking_client_retries",
            "Tracking requests that carried `X-Retry-Count` > 0 (an SDK retrying).",
            registry=r,
        )
        self.queue_events = Gauge(
            "closedloop_write_queue_events",
            "Events waiting for the group-commit writer.",
            registry=r,
        )
        self.overloaded = Counter(
            "closedloop_write_queue_overloaded",
            "Requests refused with 503 because the write queue was full.",
            registry=r,
        )
        self.commit_seconds = Histogram(
            "closedloop_commit_seconds",
            "Time of one group commit (insert and commit of one transaction).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.commit_events = Histogram(
            "closedloop_commit_events",
            "Events per group commit.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )

        self.processed_events = Counter(
            "closedloop_processor_events",
            "Events the processor applied to identities and profiles (this process).",
            registry=r,
        )
        self.process_seconds = Histogram(
            "closedloop_processor_batch_seconds",
            "Time of one processor batch (read, resolve, write, commit).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.lag_events = Gauge(
            "closedloop_processor_lag_events",
            "Events in the log the processor has not applied yet (measured at scrape).",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "closedloop_processor_lag_seconds",
            "Age of the oldest event not applied yet, by its receivedAt (0 when none).",
            registry=r,
        )
        self.lag_held = Gauge(
            "closedloop_processor_held_events",
            "Events not applied yet that the processor cannot read yet: an older transaction "
            "is still open in the database cluster (PostgreSQL; 0 on SQLite).",
            registry=r,
        )
        self.lag_held_seconds = Gauge(
            "closedloop_processor_held_seconds",
            "How long the oldest open transaction holding events back has been open, where "
            "the store's user may see it (0 when no event is held or it is hidden).",
            registry=r,
        )

        self.feed_last_success = Gauge(
            "closedloop_feed_last_success_timestamp_seconds",
            "Unix time the feed's newest successful run finished (measured at scrape).",
            ["feed"],
            registry=r,
        )
        self.feed_failing = Gauge(
            "closedloop_feed_failing",
            "1 when the feed's newest finished run failed (measured at scrape).",
            ["feed"],
            registry=r,
        )

    def accepted(self, source: str) -> Any:
        """`events_accepted` for `source`, its labelled child cached (one per request)."""
        child = self._accepted.get(source)
        if child is None:
            child = self._accepted[source] = self.events_accepted.labels(source)
        return child

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return bytes(generate_latest(self.registry))

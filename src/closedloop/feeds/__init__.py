"""Feeds: scheduled exports of customers into the CRM (CSV or JSONL to a local folder,
FTPS, SFTP or a webhook), mapped column by column, delivered once, with a run log."""

from closedloop.feeds.definition import FeedDefinition, parse_feed, render_file_name
from closedloop.feeds.destinations import DeliveryError, check_host, sign
from closedloop.feeds.formats import neutralise, unneutralise
from closedloop.feeds.parts import keep_workers_ready, ready_workers, stop_ready_workers
from closedloop.feeds.runs import (
    FeedRun,
    FeedScheduler,
    Preview,
    execute_due,
    get_run,
    list_runs,
    preview,
    queue_run,
    run_now,
    schedule_due,
)
from closedloop.feeds.shipped import SHIPPED_FEEDS
from closedloop.feeds.store import (
    FeedHealth,
    SavedFeed,
    delete_feed,
    get_feed,
    health,
    list_feeds,
    save_feed,
)

__all__ = [
    "SHIPPED_FEEDS",
    "DeliveryError",
    "FeedDefinition",
    "FeedHealth",
    "FeedRun",
    "FeedScheduler",
    "Preview",
    "SavedFeed",
    "check_host",
    "delete_feed",
    "execute_due",
    "get_feed",
    "get_run",
    "health",
    "keep_workers_ready",
    "list_feeds",
    "list_runs",
    "neutralise",
    "parse_feed",
    "preview",
    "queue_run",
    "ready_workers",
    "render_file_name",
    "run_now",
    "save_feed",
    "schedule_due",
    "sign",
    "stop_ready_workers",
    "unneutralise",
]

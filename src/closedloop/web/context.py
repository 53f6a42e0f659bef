"""What a running app holds: settings, engine, writer, key resolver, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.engine import Engine

from closedloop.access import TokenChecker
from closedloop.config import Settings
from closedloop.feeds import FeedScheduler
from closedloop.identity.suppression import SuppressionList
from closedloop.ingest import GroupCommitWriter, WriteKeyResolver
from closedloop.ingest.ratelimit import RateLimiter
from closedloop.metrics import Metrics

__all__ = ["AppContext", "get_context"]


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: Engine
    writer: GroupCommitWriter
    keys: WriteKeyResolver
    metrics: Metrics
    feed_scheduler: FeedScheduler | None = None
    suppression: SuppressionList | None = None
    rate_limiter: RateLimiter | None = None
    tokens: TokenChecker | None = None


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx

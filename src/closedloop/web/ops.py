"""Operations: `GET /healthz` and `GET /metrics` (Prometheus text format)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop import feeds, profiles
from closedloop.web._json import JSONOut
from closedloop.web.context import get_context

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness and store check")
async def healthz(request: Request) -> Response:
    ctx = get_context(request)

    def probe() -> None:
        with ctx.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        await run_in_threadpool(probe)
    except sa.exc.SQLAlchemyError:
        return JSONOut(
            {"status": "unavailable", "database": "unreachable"},
            status_code=503,
            headers={"Retry-After": str(ctx.settings.ingest.retry_after_seconds)},
        )
    return JSONOut(
        {"status": "ok", "database": "ok", "write_queue_events": ctx.writer.queued_events}
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    ctx = get_context(request)
    try:
        lag = await run_in_threadpool(profiles.lag, ctx.engine)
    except sa.exc.SQLAlchemyError:
        pass  # the store is down: the other metrics still answer
    else:
        ctx.metrics.lag_events.set(lag.events)
        ctx.metrics.lag_seconds.set(lag.oldest_seconds)
        ctx.metrics.lag_held.set(lag.held)
        ctx.metrics.lag_held_seconds.set(lag.held_seconds)
    try:
        found = await run_in_threadpool(feeds.health, ctx.engine)
    except sa.exc.SQLAlchemyError:
        found = []
    for feed in found:
        if feed.last_success_at is not None:
            ctx.metrics.feed_last_success.labels(feed.feed).set(feed.last_success_at.timestamp())
        ctx.metrics.feed_failing.labels(feed.feed).set(1 if feed.last_failed else 0)
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

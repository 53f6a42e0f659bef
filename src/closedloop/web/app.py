"""The FastAPI application: `create_app(settings)`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from closedloop import __version__
from closedloop.access import TokenChecker
from closedloop.config import Settings
from closedloop.feeds import FeedScheduler
from closedloop.identity.suppression import SuppressionList
from closedloop.ingest import GroupCommitWriter, WriteKeyResolver
from closedloop.ingest.ratelimit import RateLimiter
from closedloop.metrics import Metrics
from closedloop.privacy import PrivacyRunner
from closedloop.profiles import ProcessorRunner
from closedloop.segments import SegmentRefresher
from closedloop.store import create_store_engine
from closedloop.surveys import SurveyRunner
from closedloop.web import (
    events,
    feeds,
    mood,
    ops,
    privacy,
    profiles,
    segments,
    sources,
    surveys,
    tracking,
    ui,
)
from closedloop.web.context import AppContext
from closedloop.web.errors import install_error_handlers
from closedloop.web.security import SecurityHeaders

__all__ = ["create_app"]

_log = logging.getLogger(__name__)


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """Build the app. The store must be migrated (`closedloop db upgrade`; `serve` does it)."""
    own_engine = engine is None
    store = engine or create_store_engine(
        settings.database_url,
        sqlite_synchronous=settings.ingest.sqlite_synchronous,
        background_checkpoints=True,
    )
    metrics = Metrics()
    writer = GroupCommitWriter(store, settings.ingest, metrics)
    embedded = settings.processor.embedded
    scheduler = FeedScheduler(store, settings) if embedded else None
    survey_runner = SurveyRunner(store, settings) if embedded else None
    privacy_runner = PrivacyRunner(store, settings) if embedded else None
    ctx = AppContext(
        settings=settings,
        engine=store,
        writer=writer,
        keys=WriteKeyResolver(store, cache_seconds=settings.ingest.write_key_cache_seconds),
        metrics=metrics,
        feed_scheduler=scheduler,
        suppression=SuppressionList(settings),
        rate_limiter=RateLimiter(settings.ingest),
        tokens=TokenChecker(store),
    )

    processor = ProcessorRunner(store, settings, metrics) if embedded else None
    refresher = SegmentRefresher(store, settings) if embedded else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await writer.start()
        if processor is not None:
            processor.start()
        if refresher is not None:
            refresher.start()
        if scheduler is not None:
            scheduler.start()
        if survey_runner is not None:
            survey_runner.start()
        if privacy_runner is not None:
            privacy_runner.start()
        try:
            yield
        finally:
            if privacy_runner is not None:
                privacy_runner.stop()
            if survey_runner is not None:
                survey_runner.stop()
            if scheduler is not None:
                scheduler.stop()
            if refresher is not None:
                refresher.stop()
            if processor is not None:
                processor.stop()
            await writer.stop()
            if own_engine:
                store.dispose()

    app = FastAPI(
        title="closedloop",
        version=__version__,
        summary="Self-hosted customer sentiment and response hub",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    app.add_middleware(tracking.TrackingFastPath)
    app.add_middleware(SecurityHeaders)  # outermost: also on the fast path's answers
    app.include_router(tracking.router)
    app.include_router(sources.router)
    app.include_router(events.router)
    app.include_router(profiles.router)
    app.include_router(profiles.identity_router)
    app.include_router(mood.router)
    app.include_router(segments.router)
    app.include_router(feeds.router)
    app.include_router(surveys.router)
    app.include_router(privacy.router)
    app.include_router(ops.router)
    app.include_router(ui.router)
    app.mount("/static", ui.static_files(), name="static")
    return app

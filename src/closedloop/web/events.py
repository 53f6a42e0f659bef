"""Inspection of the event log: `/v1/events` and `/v1/failed-events` (admin token)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from closedloop import ingest
from closedloop.errors import InvalidInputError
from closedloop.ingest.messages import parse_timestamp
from closedloop.store import parse_row_id
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context

__all__ = ["router"]

router = APIRouter(tags=["events"])


class EventOut(BaseModel):
    id: int
    source: str
    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime
    payload: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class FailedEventOut(BaseModel):
    id: int
    source: str | None
    origin: str
    message_id: str | None
    field: str | None
    reason: str
    payload: str | None
    payload_truncated: bool
    received_at: datetime


class FailedEventPage(BaseModel):
    items: list[FailedEventOut]
    next_cursor: str | None


def _cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    found = parse_row_id(value)
    if found is None:
        raise InvalidInputError(
            f"invalid `cursor` `{value[:40]}`: use the `next_cursor` of the previous page",
            field="cursor",
        )
    return found


@router.get("/v1/events", summary="Events in the log, newest first, with cursor paging")
async def list_events(
    request: Request,
    _auth: AdminAuth,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    type: Literal["identify", "track", "page", "screen", "group", "alias"] | None = None,
    event: str | None = None,
    source: str | None = None,
    since: str | None = Query(None, description="ISO-8601; events at or after this time"),
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> EventPage:
    query = ingest.EventQuery(
        user_id=user_id,
        anonymous_id=anonymous_id,
        type=type,
        event=event,
        source=source,
        since=parse_timestamp(since, "since"),
        before_id=_cursor(cursor),
        limit=limit,
    )
    engine = get_context(request).engine
    found = await run_in_threadpool(ingest.list_events, engine, query)
    items = [EventOut(**vars(e)) for e in found]
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return EventPage(items=items, next_cursor=next_cursor)


@router.get("/v1/failed-events", summary="Messages that were rejected, newest first")
async def list_failed(
    request: Request,
    _auth: AdminAuth,
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> FailedEventPage:
    engine = get_context(request).engine
    found = await run_in_threadpool(
        lambda: ingest.log.list_failed_events(engine, before_id=_cursor(cursor), limit=limit)
    )
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return FailedEventPage(
        items=[FailedEventOut(**vars(f)) for f in found], next_cursor=next_cursor
    )

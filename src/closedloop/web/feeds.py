"""Feeds: `/v1/feeds` (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop import feeds
from closedloop.web._json import JSONOut
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context

__all__ = ["router"]

router = APIRouter(tags=["feeds"])

_EXAMPLE = {
    "name": "crm-promoters",
    "source": {"segments": ["promoters"]},
    "columns": [
        {"name": "customer_key", "source": "customer_key"},
        {"name": "anrede", "source": "masterdata.gender", "transforms": ["salutation"]},
        {"name": "plz", "source": "masterdata.postal_code"},
    ],
    "format": {"type": "csv", "delimiter": ";", "encoding": "utf-8-sig"},
    "destination": {"type": "local", "path": "crm"},
}


@router.get("/v1/feeds", summary="The feeds with their schedules and last runs")
async def list_feeds(request: Request, _auth: AdminAuth) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(feeds.list_feeds, engine)
    return JSONOut({"items": [f.as_json() for f in found]})


@router.post("/v1/feeds", summary="Create a feed", status_code=201)
async def create_feed(
    request: Request, _auth: AdminAuth, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]
) -> Response:
    engine = get_context(request).engine
    saved = await run_in_threadpool(lambda: feeds.save_feed(engine, body, create=True))
    return JSONOut(saved.as_json(), status_code=201)


@router.get("/v1/feeds/{name}", summary="One feed")
async def get_feed(request: Request, _auth: AdminAuth, name: str) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(feeds.get_feed, engine, name)
    return JSONOut(found.as_json())


@router.put("/v1/feeds/{name}", summary="Replace a feed's definition")
async def put_feed(
    request: Request,
    _auth: AdminAuth,
    name: str,
    body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
) -> Response:
    engine = get_context(request).engine
    saved = await run_in_threadpool(lambda: feeds.save_feed(engine, body, name=name, create=False))
    return JSONOut(saved.as_json())


@router.delete("/v1/feeds/{name}", summary="Delete a feed and its run log", status_code=204)
async def delete_feed(request: Request, _auth: AdminAuth, name: str) -> Response:
    engine = get_context(request).engine
    await run_in_threadpool(feeds.delete_feed, engine, name)
    return Response(status_code=204)


@router.get("/v1/feeds/{name}/preview", summary="The first rows as a run would write them")
async def preview_feed(
    request: Request, _auth: AdminAuth, name: str, rows: int = Query(10, ge=1, le=100)
) -> Response:
    ctx = get_context(request)
    found = await run_in_threadpool(
        lambda: feeds.preview(ctx.engine, ctx.settings, name, rows=rows)
    )
    return JSONOut({"columns": found.columns, "rows": found.rows, "stats": found.stats})


@router.post(
    "/v1/feeds/{name}/runs",
    summary="Queue a run now (the server's scheduler or a worker runs it)",
    status_code=202,
)
async def queue_run(request: Request, _auth: AdminAuth, name: str) -> Response:
    ctx = get_context(request)
    run = await run_in_threadpool(feeds.queue_run, ctx.engine, name)
    if ctx.feed_scheduler is not None:
        ctx.feed_scheduler.wake()
    return JSONOut(
        run.as_json(),
        status_code=202,
        headers={"Location": f"/v1/feeds/{name}/runs/{run.id}"},
    )


@router.get("/v1/feeds/{name}/runs", summary="The runs of a feed, newest first")
async def list_runs(
    request: Request, _auth: AdminAuth, name: str, limit: int = Query(50, ge=1, le=500)
) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(lambda: feeds.list_runs(engine, name, limit=limit))
    return JSONOut({"items": [r.as_json() for r in found]})


@router.get("/v1/feeds/{name}/runs/{run_id}", summary="One run")
async def get_run(request: Request, _auth: AdminAuth, name: str, run_id: str) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(feeds.get_run, engine, name, run_id)
    return JSONOut(found.as_json())

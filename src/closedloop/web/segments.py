"""Segments: `/v1/segments` (admin token). Conditions are evaluated at the time of the request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop import clock, segments
from closedloop.errors import NotFoundError
from closedloop.web._json import JSONOut
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context
from closedloop.web.profiles import _profile_cursor

__all__ = ["router"]

router = APIRouter(tags=["segments"])


@router.post("/v1/segments/preview", summary="Count and sample the members of a condition")
async def preview(
    request: Request,
    _auth: AdminAuth,
    body: Annotated[
        dict[str, Any],
        Body(examples=[{"condition": "mood is negative or churn risk"}]),
    ],
) -> Response:
    ctx = get_context(request)
    condition = body.get("condition")
    found = await run_in_threadpool(
        lambda: segments.preview(ctx.engine, ctx.settings, condition, now=clock.now())
    )
    return JSONOut(
        {"count": found.count, "sample": found.sample, "condition": found.text, "tree": found.tree}
    )


@router.get("/v1/segments", summary="The segments with their conditions and sizes")
async def list_segments(request: Request, _auth: AdminAuth) -> Response:
    ctx = get_context(request)

    def run() -> list[dict[str, Any]]:
        now = clock.now()
        out = []
        for name, text in segments.DEFAULT_SEGMENTS.items():
            found = segments.preview(ctx.engine, ctx.settings, text, now=now, sample=0)
            out.append({"name": name, "condition": text, "size": found.count, "shipped": True})
        return out

    return JSONOut({"items": await run_in_threadpool(run)})


@router.get("/v1/segments/{name}/members", summary="Members of a segment, paged, with keys")
async def list_members(
    request: Request,
    _auth: AdminAuth,
    name: str,
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    ctx = get_context(request)
    if name not in segments.DEFAULT_SEGMENTS:
        raise NotFoundError(f"no segment `{name[:60]}`: see `GET /v1/segments`")
    after = _profile_cursor(cursor)
    found = await run_in_threadpool(
        lambda: segments.members(
            ctx.engine, ctx.settings, name, now=clock.now(), after=after, limit=limit
        )
    )
    next_cursor = found[-1]["id"] if len(found) == limit else None
    return JSONOut({"items": found, "next_cursor": next_cursor})


@router.get(
    "/v1/profiles/{profile_id}/segments",
    summary="A profile's segments, with the conditions that matched and their values",
)
async def profile_segments(request: Request, _auth: AdminAuth, profile_id: str) -> Response:
    ctx = get_context(request)
    found = await run_in_threadpool(
        lambda: segments.explain_profile(ctx.engine, ctx.settings, profile_id, now=clock.now())
    )
    return JSONOut({"items": found})

"""Segments: `/v1/segments` (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop import clock, segments
from closedloop.errors import InvalidInputError
from closedloop.web._json import JSONOut
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context
from closedloop.web.events import _cursor
from closedloop.web.profiles import _profile_cursor

__all__ = ["router"]

router = APIRouter(tags=["segments"])

_EXAMPLE = {"name": "runners", "condition": 'did "Product Viewed" with category = "Laufschuhe"'}


def _condition(body: dict[str, Any]) -> dict[str, Any]:
    return segments.condition_tree(body.get("condition"))


def _name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidInputError("`name` is required: e.g. `runners`", field="name")
    return name


@router.post("/v1/segments/preview", summary="Count and sample the members of a condition")
async def preview(
    request: Request,
    _auth: AdminAuth,
    body: Annotated[
        dict[str, Any], Body(examples=[{"condition": "mood is negative or churn risk"}])
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
    engine = get_context(request).engine
    found = await run_in_threadpool(segments.list_segments, engine)
    return JSONOut({"items": [s.as_json() for s in found]})


@router.post(
    "/v1/segments", summary="Save a new segment (its members follow at once)", status_code=201
)
async def create_segment(
    request: Request, _auth: AdminAuth, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]
) -> Response:
    ctx = get_context(request)
    name, tree = _name(body), _condition(body)
    saved = await run_in_threadpool(
        lambda: segments.save_segment(ctx.engine, ctx.settings, name, tree, create=True)
    )
    return JSONOut(saved.as_json(), status_code=201)


@router.get("/v1/segments/{name}", summary="One segment, with its size over time")
async def get_segment(request: Request, _auth: AdminAuth, name: str) -> Response:
    engine = get_context(request).engine

    def run() -> dict[str, Any]:
        found = segments.get_segment(engine, name).as_json()
        found["sizes"] = segments.sizes(engine, name)
        return found

    return JSONOut(await run_in_threadpool(run))


@router.put("/v1/segments/{name}", summary="Change a segment's condition")
async def put_segment(
    request: Request,
    _auth: AdminAuth,
    name: str,
    body: Annotated[dict[str, Any], Body(examples=[{"condition": "mood is positive"}])],
) -> Response:
    ctx = get_context(request)
    tree = _condition(body)
    saved = await run_in_threadpool(
        lambda: segments.save_segment(ctx.engine, ctx.settings, name, tree, create=False)
    )
    return JSONOut(saved.as_json())


@router.delete(
    "/v1/segments/{name}", summary="Delete a segment (its members exit)", status_code=204
)
async def delete_segment(request: Request, _auth: AdminAuth, name: str) -> Response:
    engine = get_context(request).engine
    await run_in_threadpool(segments.delete_segment, engine, name)
    return Response(status_code=204)


@router.get("/v1/segments/{name}/members", summary="Members of a segment, paged, with keys")
async def list_members(
    request: Request,
    _auth: AdminAuth,
    name: str,
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    engine = get_context(request).engine
    after = _profile_cursor(cursor)
    found = await run_in_threadpool(
        lambda: segments.stored_members(engine, name, after=after, limit=limit)
    )
    next_cursor = found[-1]["id"] if len(found) == limit else None
    return JSONOut({"items": found, "next_cursor": next_cursor})


@router.get("/v1/segments/{name}/changes", summary="Entries and exits, newest first, paged")
async def list_changes(
    request: Request,
    _auth: AdminAuth,
    name: str,
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    engine = get_context(request).engine
    before = _cursor(cursor)
    found = await run_in_threadpool(
        lambda: segments.changes(engine, name, before_id=before, limit=limit)
    )
    next_cursor = str(found[-1]["id"]) if len(found) == limit else None
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

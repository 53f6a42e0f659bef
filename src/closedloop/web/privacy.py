"""Privacy: erasure requests, subject export, the audit log (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop import privacy
from closedloop.errors import InvalidInputError
from closedloop.store import MAX_ROW_ID
from closedloop.web._json import JSONOut
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context

__all__ = ["router"]

router = APIRouter(prefix="/v1/privacy", tags=["privacy"])

_EXAMPLE = {"email": "anna@example.com", "requested_by": "ticket 4711"}


def _identifier(given: dict[str, Any]) -> tuple[str, Any]:
    """Exactly one identifier of `privacy.KINDS`."""
    found = {k: v for k, v in given.items() if k in privacy.KINDS and v is not None}
    unknown = sorted(k for k in given if k not in (*privacy.KINDS, "requested_by"))
    if unknown:
        raise InvalidInputError(
            f"unknown field `{str(unknown[0])[:40]}`: name the person by one of "
            f"{', '.join(privacy.KINDS)}",
            field=str(unknown[0])[:40],
        )
    if len(found) != 1:
        raise InvalidInputError(
            "name the person by exactly one of "
            + ", ".join(privacy.KINDS)
            + (f"; got {', '.join(sorted(found))}" if found else ""),
            field=next(iter(sorted(found)), "email"),
        )
    return next(iter(found.items()))


@router.post(
    "/erasures",
    summary="Erase a person (GDPR Art. 17): every table, then suppressed for good",
    status_code=201,
)
async def create_erasure(
    request: Request,
    _auth: AdminAuth,
    body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
) -> Response:
    ctx = get_context(request)
    kind, value = _identifier(body)
    by = body.get("requested_by")
    if by is not None and not isinstance(by, str):
        raise InvalidInputError("invalid `requested_by`: expected a string", field="requested_by")
    actor = f"api: {by}" if by else "api"
    done = await run_in_threadpool(
        lambda: privacy.request_erasure(
            ctx.engine, ctx.settings, kind=kind, value=value, requested_by=actor
        )
    )
    if ctx.suppression is not None:
        await run_in_threadpool(ctx.suppression.refresh, ctx.engine)
    return JSONOut(done.as_json(), status_code=201 if done.state == "done" else 202)


@router.get("/erasures", summary="Erasure requests, newest first, with their progress")
async def list_erasures(
    request: Request, _auth: AdminAuth, limit: int = Query(100, ge=1, le=1000)
) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(lambda: privacy.list_erasures(engine, limit=limit))
    return JSONOut({"items": [e.as_json() for e in found]})


@router.get("/erasures/{erasure_id}", summary="One erasure request")
async def get_erasure(request: Request, _auth: AdminAuth, erasure_id: str) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(privacy.get_erasure, engine, erasure_id)
    return JSONOut(found.as_json())


@router.get("/exports", summary="Everything held about a person as JSON (GDPR Art. 15/20)")
async def export_subject(
    request: Request,
    _auth: AdminAuth,
    email: str | None = None,
    phone: str | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    customer_key: str | None = None,
    profile_id: str | None = None,
    requested_by: str | None = Query(None, max_length=80),
) -> Response:
    ctx = get_context(request)
    kind, value = _identifier(
        {
            "email": email,
            "phone": phone,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "customer_key": customer_key,
            "profile_id": profile_id,
        }
    )
    actor = f"api: {requested_by}" if requested_by else "api"
    document = await run_in_threadpool(
        lambda: privacy.export_subject(
            ctx.engine, ctx.settings, kind=kind, value=value, requested_by=actor
        )
    )
    return JSONOut(document)


@router.get("/audit", summary="The privacy audit log, newest first (no personal data)")
async def audit(
    request: Request,
    _auth: AdminAuth,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=1, le=MAX_ROW_ID),
) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(lambda: privacy.list_audit(engine, limit=limit, before=before))
    return JSONOut({"items": [e.as_json() for e in found]})

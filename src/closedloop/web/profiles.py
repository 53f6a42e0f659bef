"""Profiles: look-up, the profile document, its timeline and consent (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop import clock, mood
from closedloop.errors import InvalidInputError
from closedloop.profiles import read
from closedloop.profiles.consent import set_consent
from closedloop.web._json import JSONOut
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context
from closedloop.web.events import EventOut, EventPage, _cursor

__all__ = ["identity_router", "router"]

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])
identity_router = APIRouter(prefix="/v1/identity", tags=["profiles"])


def _shown(ctx: Any, found: list[read.Profile]) -> list[dict[str, Any]]:
    """Profile documents with their mood as of now (signals fade, so it is computed here)."""
    if not found:
        return []
    rules = mood.current_rules(ctx.engine)
    now = clock.now()
    out = []
    for profile in found:
        doc = dict(profile.as_json())
        doc["mood"] = mood.describe(
            profile.derived or {}, ctx.settings.mood, now=now, rules=rules
        ).as_json()
        out.append(doc)
    return out


def _profile_cursor(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > 40 or not value.replace("_", "").isalnum():
        raise InvalidInputError(
            f"invalid `cursor` `{value[:40]}`: use the `next_cursor` of the previous page",
            field="cursor",
        )
    return value


@router.get("", summary="Look a profile up by any identifier, or list profiles (paged)")
async def list_profiles(
    request: Request,
    _auth: AdminAuth,
    email: str | None = Query(None, description="Any spelling: trimmed and lower-cased"),
    phone: str | None = Query(None, description="Any format: `0351 1234567`, `+49 351 ...`"),
    user_id: str | None = None,
    anonymous_id: str | None = None,
    customer_key: str | None = None,
    quality: str | None = Query(
        None,
        description="Only profiles with a master-data problem in this field (the trait's "
        "name, `address.postalCode`), or with any (`any`); not with a look-up",
    ),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Response:
    ctx = get_context(request)
    purposes = ctx.settings.profiles.consent_purposes
    given = {
        k: v
        for k, v in {
            "email": email,
            "phone": phone,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "customer_key": customer_key,
        }.items()
        if v is not None
    }
    if len(given) > 1:
        raise InvalidInputError(
            f"look up by one identifier at a time, not {', '.join(f'`{k}`' for k in given)}",
            field=next(iter(given)),
        )
    if given and quality is not None:
        raise InvalidInputError(
            "`quality` filters the list: it does not combine with a look-up by "
            f"`{next(iter(given))}`",
            field="quality",
        )
    if given:
        kind, value = next(iter(given.items()))
        items = await run_in_threadpool(
            lambda: _shown(
                ctx,
                [
                    p
                    for p in [
                        read.find_profile(
                            ctx.engine,
                            kind,
                            value,
                            region=ctx.settings.identity.default_region,
                            purposes=purposes,
                        )
                    ]
                    if p is not None
                ],
            )
        )
        return JSONOut({"items": items, "next_cursor": None})
    after = _profile_cursor(cursor)
    page = await run_in_threadpool(
        lambda: read.list_profiles(
            ctx.engine, after=after, limit=limit, purposes=purposes, quality=quality
        )
    )
    next_cursor = page[-1].id if len(page) == limit else None
    items = await run_in_threadpool(_shown, ctx, page)
    return JSONOut({"items": items, "next_cursor": next_cursor})


@router.get("/quality", summary="Master-data problems of all profiles, per field and problem")
async def quality_report(
    request: Request,
    _auth: AdminAuth,
    examples: int = Query(3, ge=0, le=20, description="Profiles shown per field and problem"),
) -> Response:
    engine = get_context(request).engine
    return JSONOut(await run_in_threadpool(lambda: read.quality_report(engine, examples=examples)))


@router.get("/{profile_id}", summary="One profile (a merged profile's id answers the survivor)")
async def get_profile(request: Request, _auth: AdminAuth, profile_id: str) -> Response:
    ctx = get_context(request)
    (shown,) = await run_in_threadpool(
        lambda: _shown(
            ctx,
            [
                read.get_profile(
                    ctx.engine, profile_id, purposes=ctx.settings.profiles.consent_purposes
                )
            ],
        )
    )
    return JSONOut(shown)


@router.get("/{profile_id}/events", summary="The profile's timeline across all its ids")
async def profile_events(
    request: Request,
    _auth: AdminAuth,
    profile_id: str,
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> EventPage:
    ctx = get_context(request)
    before = _cursor(cursor)
    _found, found_events = await run_in_threadpool(
        lambda: read.timeline(ctx.engine, profile_id, before_id=before, limit=limit)
    )
    next_cursor = str(found_events[-1].id) if len(found_events) == limit else None
    return EventPage(items=[EventOut(**vars(e)) for e in found_events], next_cursor=next_cursor)


def _consent_out(ctx: Any, profile_id: str) -> dict[str, Any]:
    profile = read.get_profile(
        ctx.engine, profile_id, purposes=ctx.settings.profiles.consent_purposes
    )
    history = read.consent_history(ctx.engine, profile.id)
    return {
        "profile_id": profile.id,
        "consent": profile.document["consent"],
        "history": [
            {
                "purpose": h.purpose,
                "granted": h.granted,
                "at": h.at.isoformat(),
                "source": h.source,
                "event_id": h.event_id,
            }
            for h in history
        ],
    }


@router.get("/{profile_id}/consent", summary="Consent per purpose and its history")
async def get_consent(request: Request, _auth: AdminAuth, profile_id: str) -> Response:
    ctx = get_context(request)
    return JSONOut(await run_in_threadpool(_consent_out, ctx, profile_id))


@router.put("/{profile_id}/consent", summary="State consent per purpose (true or false)")
async def put_consent(
    request: Request,
    _auth: AdminAuth,
    profile_id: str,
    statements: Annotated[dict[str, Any], Body(examples=[{"surveys": True, "marketing": False}])],
) -> Response:
    ctx = get_context(request)

    def run() -> dict[str, Any]:
        found = set_consent(ctx.engine, ctx.settings, profile_id, statements)
        return _consent_out(ctx, found)

    return JSONOut(await run_in_threadpool(run))


@identity_router.get("/conflicts", summary="Joins the identity rules refused (paged)")
async def list_conflicts(
    request: Request,
    _auth: AdminAuth,
    reason: str | None = Query(
        None, description="`different_user_ids` or `anonymous_id_limit`; all when absent"
    ),
    settled: bool | None = Query(
        None,
        description="`false`: only the open ones; `true`: only those an alias joined since",
    ),
    sort: str = Query(
        "newest",
        description="`newest` (first recorded), `occurrences` (most first) or `last_seen` "
        "(newest event first); ties newest first",
    ),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Response:
    engine = get_context(request).engine

    def run() -> list[dict[str, Any]]:
        return read.list_conflicts(
            engine,
            reason=reason,
            settled=settled,
            sort=sort,
            after=read.conflict_cursor(sort, cursor),
            limit=limit,
        )

    found = await run_in_threadpool(run)
    next_cursor = read.next_conflict_cursor(sort, found, limit)
    return JSONOut({"items": found, "next_cursor": next_cursor})

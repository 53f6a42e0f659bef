"""Surveys: `/v1/surveys` (admin token) and the public answer pages `/s/{token}`.

A GET on a rating link shows the page with the score selected and records nothing (mail
scanners open links); the form's POST records the answer; posting again updates it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Form, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from closedloop import surveys
from closedloop.errors import ClosedloopError, InvalidInputError, NotFoundError
from closedloop.profiles.consent import set_consent
from closedloop.surveys.mail import templates
from closedloop.web._json import JSONOut
from closedloop.web.auth import AdminAuth
from closedloop.web.context import get_context

__all__ = ["router"]

router = APIRouter(tags=["surveys"])

_EXAMPLE = {
    "name": "nps",
    "min_delay_days": 3,
    "max_delay_days": 14,
    "interval_weeks": 26,
    "sender": "Shop <nps@shop.example>",
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@router.get("/v1/surveys", summary="The surveys")
async def list_surveys(request: Request, _auth: AdminAuth) -> Response:
    engine = get_context(request).engine
    found = await run_in_threadpool(surveys.list_surveys, engine)
    return JSONOut({"items": [s.as_json() for s in found]})


@router.post("/v1/surveys", summary="Create a survey", status_code=201)
async def create_survey(
    request: Request, _auth: AdminAuth, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]
) -> Response:
    engine = get_context(request).engine
    saved = await run_in_threadpool(lambda: surveys.save_survey(engine, body, create=True))
    return JSONOut(saved.as_json(), status_code=201)


@router.get("/v1/surveys/{name}", summary="One survey")
async def get_survey(request: Request, _auth: AdminAuth, name: str) -> Response:
    engine = get_context(request).engine
    return JSONOut((await run_in_threadpool(surveys.get_survey, engine, name)).as_json())


@router.put("/v1/surveys/{name}", summary="Replace a survey's definition")
async def put_survey(
    request: Request,
    _auth: AdminAuth,
    name: str,
    body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
) -> Response:
    engine = get_context(request).engine
    saved = await run_in_threadpool(
        lambda: surveys.save_survey(engine, body, name=name, create=False)
    )
    return JSONOut(saved.as_json())


@router.delete("/v1/surveys/{name}", summary="Delete a survey with its log", status_code=204)
async def delete_survey(request: Request, _auth: AdminAuth, name: str) -> Response:
    engine = get_context(request).engine
    await run_in_threadpool(surveys.delete_survey, engine, name)
    return Response(status_code=204)


@router.get("/v1/surveys/{name}/stats", summary="NPS, distribution, response rate, comments")
async def survey_stats(request: Request, _auth: AdminAuth, name: str) -> Response:
    engine = get_context(request).engine
    return JSONOut(await run_in_threadpool(surveys.stats, engine, name))


@router.get(
    "/v1/surveys/{name}/eligibility",
    summary="Why a customer was or was not surveyed: every decision with its reason",
)
async def survey_eligibility(
    request: Request,
    _auth: AdminAuth,
    name: str,
    profile: str = Query(..., min_length=1, max_length=80),
) -> Response:
    engine = get_context(request).engine
    return JSONOut(await run_in_threadpool(surveys.eligibility, engine, name, profile))


# Public pages ----------------------------------------------------------------------------


def _page(
    request: Request,
    status: int,
    *,
    locale: str = "de",
    message: str | None = None,
    form: bool = False,
    **context: Any,
) -> HTMLResponse:
    title = "Umfrage" if locale == "de" else "Survey"
    folder = get_context(request).settings.surveys.templates_dir
    html = (
        templates(folder)
        .get_template("page.html")
        .render(locale=locale, title=title, message=message, form=form, **context)
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _error_page(request: Request, exc: ClosedloopError) -> HTMLResponse:
    status = 404 if isinstance(exc, NotFoundError) else 400
    if isinstance(exc, InvalidInputError) and exc.reason == "expired":
        status = 410
    return _page(request, status, message=exc.message)


@router.get("/s/{token}", include_in_schema=False)
async def survey_page(request: Request, token: str, score: int | None = None) -> Response:
    ctx = get_context(request)
    try:
        row, definition = await run_in_threadpool(
            surveys.invitation_of, ctx.engine, ctx.settings, token
        )
    except ClosedloopError as exc:
        return _error_page(request, exc)
    locale = row.locale
    return _page(
        request,
        200,
        locale=locale,
        form=True,
        action=f"/s/{token}",
        question=definition.question.de if locale == "de" else definition.question.en,
        selected=score if score is not None and 0 <= score <= 10 else None,
        comment="",
    )


@router.post("/s/{token}", include_in_schema=False)
async def survey_answer(
    request: Request,
    token: str,
    score: Annotated[str, Form(max_length=4)] = "",
    comment: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    ctx = get_context(request)
    try:
        answer = await run_in_threadpool(
            lambda: surveys.record_answer(
                ctx.engine, ctx.settings, token, score=score, comment=comment
            )
        )
    except ClosedloopError as exc:
        return _error_page(request, exc)
    thanks = {
        "de": "Danke für Ihre Antwort! Sie können sie über denselben Link noch ändern.",
        "en": "Thank you for your answer! You can still change it through the same link.",
    }
    return _page(
        request, 200, locale=answer.locale, message=thanks.get(answer.locale, thanks["de"])
    )


@router.get("/s/{token}/unsubscribe", include_in_schema=False)
async def unsubscribe_page(request: Request, token: str) -> Response:
    """The link in the mail shows a button; only its POST unsubscribes."""
    ctx = get_context(request)
    try:
        row, _definition = await run_in_threadpool(
            surveys.invitation_of, ctx.engine, ctx.settings, token
        )
    except ClosedloopError as exc:
        return _error_page(request, exc)
    return _page(request, 200, locale=row.locale, unsubscribe=f"/s/{token}/unsubscribe")


@router.post("/s/{token}/unsubscribe", include_in_schema=False)
async def unsubscribe(request: Request, token: str) -> Response:
    """RFC 8058 one-click unsubscribe: withdraws consent for the survey's purpose."""
    ctx = get_context(request)
    try:
        row, definition = await run_in_threadpool(
            surveys.invitation_of, ctx.engine, ctx.settings, token
        )
        await run_in_threadpool(
            set_consent, ctx.engine, ctx.settings, row.profile_id, {definition.purpose: False}
        )
    except ClosedloopError as exc:
        return _error_page(request, exc)
    done = {"de": "Sie erhalten keine Umfragen mehr.", "en": "You will get no more surveys."}
    return _page(request, 200, locale=row.locale, message=done.get(row.locale, done["de"]))

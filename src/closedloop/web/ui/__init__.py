"""The dashboard: server-rendered pages (Jinja2 + htmx) for marketers, CRM managers and the
call center, behind a login with roles. Routes are not part of the API description."""

from __future__ import annotations

import csv
import functools
import inspect
import io
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from closedloop import clock, feeds, privacy, segments, surveys
from closedloop.access import users as accounts
from closedloop.errors import ClosedloopError, InvalidInputError, NotFoundError
from closedloop.feeds.formats import cell_text, neutralise
from closedloop.profiles import read as read_profiles
from closedloop.store import MAX_ROW_ID
from closedloop.web.context import AppContext, get_context
from closedloop.web.ui import data
from closedloop.web.ui.charts import bars, nps_bars
from closedloop.web.ui.render import page

__all__ = ["COOKIE", "router", "static_files"]

router = APIRouter(include_in_schema=False)
COOKIE = "closedloop_session"
_LOGIN_CSRF = "closedloop_login"
_ALL = ("admin", "marketer", "agent", "viewer")
_ANALYSTS = ("admin", "marketer", "viewer")
_EDITORS = ("admin", "marketer")
_CALLERS = ("admin", "marketer", "agent")


def static_files() -> StaticFiles:
    return StaticFiles(directory=Path(__file__).parent.parent / "static")


def _secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded == "https"


class _DeniedError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _session(request: Request, roles: tuple[str, ...]) -> accounts.Session:
    ctx: AppContext = get_context(request)
    cookie = request.cookies.get(COOKIE, "")
    found = accounts.session_of(ctx.engine, cookie) if cookie else None
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise _DeniedError(
            RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        )
    if found.user.role not in roles:
        raise _DeniedError(_render(request, found, "error.html", 403, message="forbidden"))
    return found


def _csrf(request: Request, session: accounts.Session, form: dict[str, Any]) -> None:
    given = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
    if not secrets.compare_digest(given.encode(), session.csrf_token.encode()):
        raise _DeniedError(_render(request, session, "error.html", 403, message="csrf"))


def _without(view: Callable[..., Any], *names: str) -> inspect.Signature:
    sig = inspect.signature(view)
    return sig.replace(parameters=[p for n, p in sig.parameters.items() if n not in names])


def _view(roles: tuple[str, ...]) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """A page for `roles`: the view gets the session after the request."""

    def wrap(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def run(request: Request, **kwargs: Any) -> Response:
            try:
                return view(request, _session(request, roles), **kwargs)
            except _DeniedError as denied:
                return denied.response

        run.__signature__ = _without(view, "session")  # type: ignore[attr-defined]
        return run

    return wrap


def _post(roles: tuple[str, ...]) -> Callable[[Callable[..., Response]], Callable[..., Any]]:
    """A form post for `roles`, its CSRF token checked; the view gets session and form."""

    def wrap(view: Callable[..., Response]) -> Callable[..., Any]:
        @functools.wraps(view)
        async def run(request: Request, **kwargs: Any) -> Response:
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}

            def call() -> Response:
                try:
                    session = _session(request, roles)
                    _csrf(request, session, form)
                    return view(request, session, form, **kwargs)
                except _DeniedError as denied:
                    return denied.response

            return await run_in_threadpool(call)

        run.__signature__ = _without(view, "session", "form")  # type: ignore[attr-defined]
        return run

    return wrap


def _render(
    request: Request, session: accounts.Session, template: str, status: int = 200, **context: Any
) -> Response:
    context.setdefault("path", request.url.path)
    context.setdefault("status", status)
    return page(
        template, {"session": session, **context}, locale=session.user.locale, status=status
    )


# Log in and out ---------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    token = secrets.token_urlsafe(24)
    response = page(
        "login.html",
        {"csrf": token, "next": _local(next), "error": None},
        locale=_locale(request),
    )
    response.set_cookie(
        _LOGIN_CSRF, token, httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


def _local(target: str) -> str:
    """`target` when it is a path on this hub, else `/` (no open redirect: `//host`,
    `/\\host` and schemes are refused)."""
    if (
        not target.startswith("/")
        or target[1:2] in ("/", "\\")
        or any(ch in target for ch in "\r\n\t")
        or len(target) > 2000
    ):
        return "/"
    return target


def _locale(request: Request) -> str:
    wanted = request.headers.get("accept-language", "de")[:2].lower()
    return "en" if wanted == "en" else "de"


@router.post("/login")
async def login(request: Request) -> Response:
    form = dict(await request.form())
    ctx = get_context(request)
    expected = request.cookies.get(_LOGIN_CSRF, "")
    given = str(form.get("csrf", ""))
    target = str(form.get("next", "/"))
    target = _local(target)
    if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
        return page(
            "login.html",
            {"csrf": expected, "next": target, "error": "expired"},
            locale=_locale(request),
            status=400,
        )
    done = await run_in_threadpool(
        accounts.log_in, ctx.engine, str(form.get("name", "")), str(form.get("password", ""))
    )
    if done is None:
        return page(
            "login.html",
            {"csrf": expected, "next": target, "error": "invalid"},
            locale=_locale(request),
            status=401,
        )
    cookie, session = done
    if session.user.role == "agent" and target == "/":
        target = "/customers"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        max_age=accounts.SESSION_HOURS * 3600,
    )
    response.delete_cookie(_LOGIN_CSRF)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = dict(await request.form())
    ctx = get_context(request)
    cookie = request.cookies.get(COOKIE, "")
    session = accounts.session_of(ctx.engine, cookie) if cookie else None
    if session is not None:
        try:
            _csrf(request, session, form)
        except _DeniedError as denied:
            return denied.response
        accounts.end_session(ctx.engine, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


# Overview -------------------------------------------------------------------------------


@router.get("/")
@_view(_ALL)
def overview(request: Request, session: accounts.Session) -> Response:
    if session.user.role == "agent":
        return RedirectResponse("/customers", status_code=303)
    ctx = get_context(request)
    facts = data.overview(ctx.engine, ctx.settings, clock.now())
    total = facts["mood_total"] or 1
    mood_bars = bars(
        [(label, facts["mood"][label] / total * 100, f"mood-{label}") for label in facts["mood"]],
        width=300,
        height=120,
    )
    return _render(request, session, "overview.html", facts=facts, mood_bars=mood_bars)


# Customer lookup ----------------------------------------------------------------------------


@router.get("/customers")
@_view(_CALLERS)
def customers(request: Request, session: accounts.Session, q: str = "") -> Response:
    ctx = get_context(request)
    error = None
    if q:
        try:
            found = data.find(ctx.engine, ctx.settings, q[:320])
        except InvalidInputError as exc:
            found, error = None, exc.message
        if found is not None:
            return RedirectResponse(f"/customers/{quote(found)}", status_code=303)
        if error is None:
            error = "not_found"
    return _render(request, session, "customers.html", q=q, error=error)


@router.get("/customers/{profile_id}")
@_view(_CALLERS)
def customer(request: Request, session: accounts.Session, profile_id: str) -> Response:
    ctx = get_context(request)
    try:
        facts = data.customer(ctx.engine, ctx.settings, profile_id[:40], clock.now())
    except NotFoundError:
        return _render(request, session, "customers.html", q="", error="not_found", status=404)
    channel = request.query_params.get("channel") or None
    text = request.query_params.get("text") or None
    events, more = data.timeline_page(
        ctx.engine, facts["id"], before=None, channel=channel, text=text
    )
    return _render(
        request,
        session,
        "customer.html",
        c=facts,
        events=events,
        more=more,
        channel=channel or "",
        text=text or "",
    )


@router.get("/customers/{profile_id}/timeline")
@_view(_CALLERS)
def customer_timeline(
    request: Request,
    session: accounts.Session,
    profile_id: str,
    before: int | None = Query(None, ge=1, le=MAX_ROW_ID),
) -> Response:
    ctx = get_context(request)
    channel = request.query_params.get("channel") or None
    text = request.query_params.get("text") or None
    try:
        events, more = data.timeline_page(
            ctx.engine, profile_id[:40], before=before, channel=channel, text=text
        )
    except NotFoundError:
        return Response(status_code=404)
    return _render(
        request,
        session,
        "_timeline.html",
        events=events,
        more=more,
        profile_id=profile_id,
        channel=channel or "",
        text=text or "",
    )


# Data quality ------------------------------------------------------------------------------


@router.get("/quality")
@_view(_EDITORS)
def quality(request: Request, session: accounts.Session) -> Response:
    """The data steward's page: master-data problems per field, most first, and the open
    refused joins met most often (shared devices, kiosks)."""
    ctx = get_context(request)
    report = read_profiles.quality_report(ctx.engine, examples=3)
    conflicts = read_profiles.list_conflicts(
        ctx.engine, settled=False, sort="occurrences", limit=20
    )
    return _render(request, session, "quality.html", report=report, conflicts=conflicts)


# Segments --------------------------------------------------------------------------------


@router.get("/segments")
@_view(_ANALYSTS)
def segment_list(request: Request, session: accounts.Session) -> Response:
    ctx = get_context(request)
    return _render(request, session, "segments.html", rows=data.segment_rows(ctx.engine))


@router.get("/segments/editor")
@_view(_EDITORS)
def segment_editor(request: Request, session: accounts.Session, condition: str = "") -> Response:
    ctx = get_context(request)
    result = _preview(ctx, condition)
    return _render(request, session, "segment_editor.html", condition=condition, result=result)


def _preview(ctx: AppContext, condition: str) -> dict[str, Any] | None:
    if not condition.strip():
        return None
    if len(condition) > 4000:
        return {"error": "the condition is longer than 4,000 characters", "count": None}
    try:
        found = segments.preview(ctx.engine, ctx.settings, condition, now=clock.now(), sample=10)
    except ClosedloopError as exc:
        return {"error": exc.message, "count": None, "pointer": _pointer(condition, exc.message)}
    return {"error": None, "count": found.count, "sample": found.sample, "text": found.text}


def _pointer(condition: str, message: str) -> str | None:
    """The line of the condition an error names, with a caret under its column."""
    found = re.match(r"line (\d+), column (\d+)", message)
    if found is None:
        return None
    line, column = int(found.group(1)), int(found.group(2))
    lines = condition.splitlines() or [""]
    if not 1 <= line <= len(lines):
        return None
    return lines[line - 1] + "\n" + " " * (column - 1) + "^"


@router.get("/segments/count")
@_view(_EDITORS)
def segment_count(request: Request, session: accounts.Session, condition: str = "") -> Response:
    ctx = get_context(request)
    return _render(request, session, "_count.html", result=_preview(ctx, condition))


# Surveys ---------------------------------------------------------------------------------


@router.get("/surveys")
@_view(_ANALYSTS)
def survey_list(request: Request, session: accounts.Session) -> Response:
    ctx = get_context(request)
    found = surveys.list_surveys(ctx.engine)
    if len(found) == 1:
        return RedirectResponse(f"/surveys/{quote(found[0].name)}", status_code=303)
    return _render(request, session, "surveys.html", surveys=found)


@router.get("/surveys/{name}")
@_view(_ANALYSTS)
def survey(request: Request, session: accounts.Session, name: str) -> Response:
    ctx = get_context(request)
    try:
        stats = surveys.stats(ctx.engine, name[:64], comments=0)
    except NotFoundError:
        return _render(request, session, "error.html", message="not_found", status=404)
    group = request.query_params.get("group") or None
    group = group if group in data.GROUPS else None
    text = (request.query_params.get("text") or "")[:200]
    segment = (request.query_params.get("segment") or "")[:64]
    shown = (
        data.comments(ctx.engine, name, group=group, text=text or None, segment=segment or None)
        if session.user.role != "viewer"
        else []
    )
    distribution = bars(
        [
            (
                score,
                float(count),
                next(g for g, (lo, hi) in data.GROUPS.items() if lo <= int(score) <= hi),
            )
            for score, count in stats["distribution"].items()
        ],
        width=440,
        height=120,
    )
    months = stats["by_month"][-12:]
    trend = nps_bars([(m["month"], m["nps"], m["n"]) for m in months])
    groups = {
        g: sum(stats["distribution"][str(s)] for s in range(lo, hi + 1))
        for g, (lo, hi) in data.GROUPS.items()
    }
    why = None
    who = (request.query_params.get("who") or "").strip()
    if who and session.user.role != "viewer":
        try:
            pid = data.find(ctx.engine, ctx.settings, who[:320])
            if pid:
                why = surveys.eligibility(ctx.engine, name, pid)
                why["now"] = surveys.why(ctx.engine, ctx.settings, name, pid, at=clock.now())
            else:
                why = {"error": "not_found"}
        except ClosedloopError as exc:
            why = {"error": exc.message}
    return _render(
        request,
        session,
        "survey.html",
        name=name,
        stats=stats,
        distribution=distribution,
        trend=trend,
        months=months,
        groups=groups,
        group=group or "",
        text=text,
        segment=segment,
        segments=[s["segment"] for s in stats["by_segment"]],
        comments=shown,
        who=who,
        why=why,
    )


# Feeds -------------------------------------------------------------------------------------


@router.get("/feeds")
@_view(_ANALYSTS)
def feed_list(request: Request, session: accounts.Session) -> Response:
    ctx = get_context(request)
    found = feeds.list_feeds(ctx.engine)
    runs = {f.name: feeds.list_runs(ctx.engine, f.name, limit=10) for f in found}
    health = {h.feed: h for h in feeds.health(ctx.engine)}
    return _render(request, session, "feeds.html", feeds=found, runs=runs, health=health)


@router.post("/feeds/{name}/run")
@_post(_EDITORS)
def feed_run(
    request: Request, session: accounts.Session, form: dict[str, str], name: str
) -> Response:
    ctx = get_context(request)
    try:
        feeds.queue_run(ctx.engine, name[:64])
    except ClosedloopError as exc:
        return _render(request, session, "error.html", message=exc.message, status=409)
    if ctx.feed_scheduler is not None:
        ctx.feed_scheduler.wake()
    return RedirectResponse("/feeds", status_code=303)


# Privacy ---------------------------------------------------------------------------------


def _privacy(
    request: Request, session: accounts.Session, status: int = 200, **context: Any
) -> Response:
    ctx = get_context(request)
    return _render(
        request,
        session,
        "privacy.html",
        status,
        kinds=privacy.KINDS,
        erasures=privacy.list_erasures(ctx.engine, limit=100),
        audit=privacy.list_audit(ctx.engine, limit=100),
        **context,
    )


@router.get("/privacy")
@_view(("admin",))
def privacy_page(request: Request, session: accounts.Session, done: str = "") -> Response:
    return _privacy(request, session, done=done[:40])


@router.post("/privacy/erasures")
@_post(("admin",))
def privacy_erase(request: Request, session: accounts.Session, form: dict[str, str]) -> Response:
    """Erase a person from the dashboard: an identifier, a reference (ticket) and an explicit
    confirmation; the request is recorded as the signed-in admin's."""
    ctx = get_context(request)
    kind, value = form.get("kind", ""), form.get("value", "").strip()
    reference = form.get("reference", "").strip()
    problem: tuple[str, str] | None = None
    ours = True  # a message of this view (translated), else the store's (quotes the input)
    if kind not in privacy.KINDS:
        problem = ("kind", "choose what identifies the person")
    elif not value or len(value) > 320:
        problem = ("value", "give the identifier (at most 320 characters)")
    elif not reference or len(reference) > 100:
        problem = ("reference", "give a reference such as the ticket (at most 100 characters)")
    elif form.get("confirm") != "yes":
        problem = ("confirm", "confirm that every record of this person is to be erased")
    if problem is None:
        try:
            done = privacy.request_erasure(
                ctx.engine,
                ctx.settings,
                kind=kind,
                value=value,
                requested_by=f"dashboard: {session.user.name} ({reference})",
            )
        except ClosedloopError as exc:
            problem, ours = ("value", exc.message), False  # the identifier is malformed
        else:
            if ctx.suppression is not None:
                ctx.suppression.refresh(ctx.engine)
            return RedirectResponse(f"/privacy?done={done.id}", status_code=303)
    field, message = problem
    form_values = {"kind": kind, "value": value[:320], "reference": reference[:100]}
    return _privacy(
        request,
        session,
        400,
        error={"field": field, "message": message, "ours": ours},
        form=form_values,
    )


@router.post("/settings/locale")
@_post(_ALL)
def set_locale(request: Request, session: accounts.Session, form: dict[str, str]) -> Response:
    ctx = get_context(request)
    wanted = str(form.get("locale", "de"))
    if wanted in accounts.LOCALES:
        accounts.set_locale(ctx.engine, session.user.name, wanted)
    back = str(form.get("back", "/"))
    return RedirectResponse(_local(back), 303)


# CSV exports: each table as a file, with the filters of its view -----------------------------


_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _csv(name: str, header: list[str], rows: list[list[Any]]) -> Response:
    """`;`-separated UTF-8 with BOM (opens in spreadsheets as is); cells that a spreadsheet
    would run as a formula are neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(
            [neutralise(cell_text(c.isoformat() if hasattr(c, "isoformat") else c)) for c in row]
        )
    # The name holds a part of the path (a survey's or feed's name, a profile id): in the
    # header only what needs no quoting (a `"`, a line break or a non-Latin-1 character
    # would break it or fail to encode).
    safe = _UNSAFE_IN_FILE_NAME.sub("_", name)
    return Response(
        "\ufeff" + buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{safe}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/segments.csv")
@_view(_ANALYSTS)
def segments_csv(request: Request, session: accounts.Session) -> Response:
    rows = data.segment_rows(get_context(request).engine)
    return _csv(
        "segments",
        ["segment", "condition", "size", "refreshed_at"],
        [[r["name"], r["condition"], r["size"], r["refreshed_at"]] for r in rows],
    )


@router.get("/surveys/{name}/comments.csv")
@_view(_EDITORS)
def comments_csv(request: Request, session: accounts.Session, name: str) -> Response:
    group = request.query_params.get("group") or None
    text = (request.query_params.get("text") or "")[:200] or None
    found = data.comments(
        get_context(request).engine,
        name[:64],
        group=group if group in data.GROUPS else None,
        text=text,
        segment=(request.query_params.get("segment") or "")[:64] or None,
        limit=10_000,
    )
    return _csv(
        f"{name[:64]}-comments",
        ["score", "group", "answered_at", "segments", "comment"],
        [[c["score"], c["group"], c["at"], "|".join(c["segments"]), c["comment"]] for c in found],
    )


@router.get("/customers/{profile_id}/timeline.csv")
@_view(_CALLERS)
def timeline_csv(request: Request, session: accounts.Session, profile_id: str) -> Response:
    try:
        events, _more = data.timeline_page(
            get_context(request).engine,
            profile_id[:40],
            before=None,
            channel=request.query_params.get("channel") or None,
            text=request.query_params.get("text") or None,
            limit=5000,
        )
    except NotFoundError:
        return Response(status_code=404)
    return _csv(
        f"{profile_id[:40]}-timeline",
        ["at", "channel", "source", "type", "event", "properties"],
        [
            [e["at"], e["channel"], e["source"], e["type"], e["title"], e["properties"]]
            for e in events
        ],
    )


@router.get("/feeds/{name}/runs.csv")
@_view(_ANALYSTS)
def runs_csv(request: Request, session: accounts.Session, name: str) -> Response:
    try:
        runs = feeds.list_runs(get_context(request).engine, name[:64], limit=1000)
    except NotFoundError:
        return Response(status_code=404)
    return _csv(
        f"{name[:64]}-runs",
        ["id", "trigger", "state", "started_at", "finished_at", "rows", "bytes", "file", "error"],
        [
            [
                r.id,
                r.trigger,
                r.state,
                r.started_at,
                r.finished_at,
                r.rows,
                r.bytes,
                r.file_name,
                r.error,
            ]
            for r in runs
        ],
    )


@router.get("/privacy/audit.csv")
@_view(("admin",))
def audit_csv(request: Request, session: accounts.Session) -> Response:
    entries = privacy.list_audit(get_context(request).engine, limit=10_000)
    return _csv(
        "privacy-audit",
        ["at", "actor", "action", "subject", "details"],
        [[e.at, e.actor, e.action, e.subject, e.details] for e in entries],
    )

"""The one place that maps closedloop errors to HTTP answers.

Body: `{"error": {"code": ..., "message": ..., "field": ...}}`; 503 and 429 carry
`Retry-After`. Tracking clients drop a batch on any 4xx, so only input errors get one.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from closedloop.errors import (
    ClosedloopError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    TransientError,
)
from closedloop.ingest.body import UnsupportedMediaError
from closedloop.web._json import JSONOut

__all__ = ["error_response", "install_error_handlers", "status_of"]

_log = logging.getLogger(__name__)


def status_of(exc: ClosedloopError) -> int:
    if isinstance(exc, UnsupportedMediaError):
        return 415
    if isinstance(exc, PayloadTooLargeError):
        return 413
    if isinstance(exc, InvalidInputError):
        return 400
    if isinstance(exc, PermissionDeniedError):
        return 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, RateLimitedError):
        return 429
    if isinstance(exc, TransientError):
        return 503
    return 500


def _code_of(exc: ClosedloopError) -> str:
    if isinstance(exc, InvalidInputError):
        return exc.reason
    return {
        401: "unauthorized",
        404: "not_found",
        409: "conflict",
        429: "rate_limited",
        503: "unavailable",
    }.get(status_of(exc), "error")


def error_response(exc: ClosedloopError) -> JSONOut:
    status = status_of(exc)
    body: dict[str, Any] = {"code": _code_of(exc), "message": exc.message}
    if isinstance(exc, InvalidInputError):
        body["field"] = exc.field
    headers: dict[str, str] = {}
    if isinstance(exc, TransientError):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="closedloop"'
    return JSONOut({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_closedloop_error(_request: Request, exc: Exception) -> JSONOut:
        if not isinstance(exc, ClosedloopError):
            raise exc
        return error_response(exc)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONOut:
        if not isinstance(exc, RequestValidationError):
            raise exc
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = f"invalid `{field}`: {first.get('msg')}" if field else str(first.get("msg"))
        return error_response(InvalidInputError(message, field=field, reason="invalid_value"))

    async def on_http_error(_request: Request, exc: Exception) -> JSONOut:
        if not isinstance(exc, StarletteHTTPException):
            raise exc
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return JSONOut(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    async def on_store_error(_request: Request, exc: Exception) -> JSONOut:
        # The store was locked or unreachable mid-request (SQLite busy, PostgreSQL down):
        # a transient fault, answered 503 with Retry-After, never a 500.
        if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            raise exc
        return error_response(
            TransientError("the store is busy or unavailable: retry shortly", retry_after=2)
        )

    app.add_exception_handler(ClosedloopError, on_closedloop_error)
    app.add_exception_handler(sa.exc.OperationalError, on_store_error)
    app.add_exception_handler(sa.exc.InterfaceError, on_store_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)

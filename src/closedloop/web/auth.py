"""Credentials: write keys for tracking (Basic user name or body), bearer admin token."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Annotated

from fastapi import Depends, Request

from closedloop.errors import PermissionDeniedError
from closedloop.web.context import AppContext, get_context

__all__ = ["AdminAuth", "basic_write_key", "require_admin"]


def basic_write_key(authorization: str | None) -> str | None:
    """The write key of a `Basic base64(key:)` header, or None when there is no such header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise PermissionDeniedError(
            "invalid Basic authorization header: expected base64 of `WRITE_KEY:`"
        ) from exc
    user, _, _password = decoded.partition(":")
    return user or None


def require_admin(request: Request) -> None:
    """Dependency: the request must carry `Authorization: Bearer <admin token>`."""
    ctx: AppContext = get_context(request)
    configured = ctx.settings.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise PermissionDeniedError("admin routes need `Authorization: Bearer <admin token>`")
    token = token.strip()
    if configured is not None and secrets.compare_digest(
        token.encode(), configured.get_secret_value().encode()
    ):
        return
    if ctx.tokens is not None and ctx.tokens.valid(token):
        return
    raise PermissionDeniedError(
        "invalid admin token"
        if configured is not None
        else "invalid admin token (`CLOSEDLOOP_ADMIN_TOKEN` is not set; `closedloop init` "
        "makes one, `closedloop tokens add NAME` more)"
    )


AdminAuth = Annotated[None, Depends(require_admin)]

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
    if configured is None:
        raise PermissionDeniedError(
            "no admin token is configured: set `CLOSEDLOOP_ADMIN_TOKEN` "
            "(`closedloop init` makes one)"
        )
    if scheme.lower() != "bearer" or not token:
        raise PermissionDeniedError("admin routes need `Authorization: Bearer <admin token>`")
    if not secrets.compare_digest(token.strip().encode(), configured.get_secret_value().encode()):
        raise PermissionDeniedError("invalid admin token")


AdminAuth = Annotated[None, Depends(require_admin)]

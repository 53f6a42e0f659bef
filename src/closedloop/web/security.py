"""Security headers on every response, and CORS for the tracking routes only.

A NUL character in the path or a query parameter is refused with 400 naming the parameter
(PostgreSQL cannot store or compare it). Every answer gets `nosniff`, `frame-ancestors
'none'` (and `X-Frame-Options`), no referrer,
and a content security policy: HTML pages set their own strict one (the survey pages), the
API docs one that allows their CDN, everything else `default-src 'none'`. Management answers
(`/v1/...` other than tracking) are not cached.

Browsers may post tracking calls from any origin (analytics.js on the shop's pages): the
tracking routes answer preflights and carry `Access-Control-Allow-Origin: *`, never with
credentials. No other route sends CORS headers, so a page elsewhere cannot read the
management API even with a token in the browser.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from closedloop.errors import InvalidInputError
from closedloop.web.errors import error_response

__all__ = ["TRACKING_PATHS", "SecurityHeaders"]

TRACKING_PATHS = frozenset(
    f"/v1/{name}"
    for name in ("identify", "track", "page", "screen", "group", "alias", "batch", "import")
)
_BASE = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_CSP_API = b"default-src 'none'; frame-ancestors 'none'"
_CSP_DOCS = (
    b"default-src 'none'; script-src https://cdn.jsdelivr.net 'unsafe-inline'; "
    b"style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src https: data:; "
    b"connect-src 'self'; worker-src blob:; frame-ancestors 'none'"
)
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"Retry-After"),
]
_PREFLIGHT = [
    *_CORS,
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"Authorization, Content-Type, Content-Encoding, X-Retry-Count",
    ),
    (b"access-control-max-age", b"86400"),
    (b"content-length", b"0"),
]


def _nul_field(path: str, query: bytes) -> str | None:
    """The query parameter (or `path`) holding a NUL character, if any."""
    if "\x00" in path:
        return "path"
    if b"%00" not in query.lower() and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "")[:60] or "query"
    return None


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        tracking = path in TRACKING_PATHS
        if tracking and scope["method"] == "OPTIONS":
            headers = [*_BASE, (b"content-security-policy", _CSP_API), *_PREFLIGHT]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        docs = path in ("/docs", "/redoc", "/docs/oauth2-redirect")
        management = path.startswith("/v1/") and not tracking

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                extra = [h for h in _BASE if h[0] not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", _CSP_DOCS if docs else _CSP_API))
                if management and b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                if tracking:
                    extra += _CORS
                message["headers"] = headers + extra
            await send(message)

        nul = _nul_field(path, scope.get("query_string", b""))
        if nul is not None:  # PostgreSQL text cannot hold NUL: refuse it here, by name
            response = error_response(
                InvalidInputError(f"`{nul}` contains a NUL character", field=nul)
            )
            await response(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)

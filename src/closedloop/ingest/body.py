"""Reading a tracking request body: size limits, gzip without bombs, JSON."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from closedloop.config import IngestSettings
from closedloop.errors import InvalidInputError, PayloadTooLargeError

__all__ = ["UnsupportedMediaError", "check_headers", "parse_json", "read_body"]

_ACCEPTED_TYPES = ("", "application/json", "text/plain", "application/x-json")


class UnsupportedMediaError(InvalidInputError):
    """Content-Type or Content-Encoding the tracking API does not read (415)."""


def check_headers(content_type: str | None, content_encoding: str | None) -> bool:
    """Validate the headers; return whether the body is gzip."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in _ACCEPTED_TYPES:
        raise UnsupportedMediaError(
            f"unsupported Content-Type `{media[:60]}`: send `application/json`",
            field="Content-Type",
            reason="unsupported_media_type",
        )
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding in ("gzip", "x-gzip"):
        return True
    raise UnsupportedMediaError(
        f"unsupported Content-Encoding `{encoding[:40]}`: send `gzip` or no encoding",
        field="Content-Encoding",
        reason="unsupported_media_type",
    )


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    gzipped: bool,
    limits: IngestSettings,
) -> bytes:
    """Read the body, refusing it as soon as it is over a limit (never inflating a bomb)."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError as exc:
            raise InvalidInputError(
                f"invalid Content-Length `{content_length[:30]}`",
                field="Content-Length",
                reason="invalid_value",
            ) from exc
        if declared > limits.max_request_bytes:
            raise _too_large(declared, limits.max_request_bytes, "request body")
    received = 0
    parts: list[bytes] = []
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gzipped else None
    inflated = 0
    limit_out = limits.max_decompressed_bytes
    async for chunk in chunks:
        received += len(chunk)
        if received > limits.max_request_bytes:
            raise _too_large(received, limits.max_request_bytes, "request body")
        if inflater is None:
            parts.append(chunk)
            continue
        data = chunk
        while data:
            try:
                out = inflater.decompress(data, limit_out - inflated + 1)
            except zlib.error as exc:
                raise _bad_gzip(exc) from exc
            inflated += len(out)
            if inflated > limit_out:
                raise _too_large(inflated, limit_out, "decompressed body", at_least=True)
            parts.append(out)
            data = inflater.unconsumed_tail
    if inflater is not None:
        try:
            tail = inflater.flush()
        except zlib.error as exc:  # pragma: no cover - flush rarely fails
            raise _bad_gzip(exc) from exc
        inflated += len(tail)
        if inflated > limit_out:
            raise _too_large(inflated, limit_out, "decompressed body", at_least=True)
        parts.append(tail)
        if not inflater.eof:
            raise InvalidInputError(
                "truncated gzip body: the compressed stream ends early",
                field="body",
                reason="invalid_encoding",
            )
    return b"".join(parts)


def _too_large(size: int, limit: int, what: str, *, at_least: bool = False) -> PayloadTooLargeError:
    amount = f"over {limit}" if at_least else str(size)
    return PayloadTooLargeError(
        f"{what} is {amount} bytes: at most {limit} are allowed; send smaller batches",
        field="body",
        reason="too_large",
    )


def _bad_gzip(exc: zlib.error) -> InvalidInputError:
    return InvalidInputError(
        f"body is not valid gzip ({exc}): send it compressed with gzip or drop Content-Encoding",
        field="body",
        reason="invalid_encoding",
    )


def parse_json(body: bytes) -> Any:
    """Parse a JSON body, naming the problem when it is not JSON."""
    if not body.strip():
        raise InvalidInputError(
            "empty body: send a JSON object", field="body", reason="malformed_json"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(
            f"malformed JSON body: {exc}", field="body", reason="malformed_json"
        ) from exc

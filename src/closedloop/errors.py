"""Errors closedloop raises on purpose.

ClosedloopError
 +-- NotFoundError          404
 +-- ConflictError          409
 +-- InvalidInputError      400 (carries field and reason)
 |    +-- PayloadTooLargeError  413
 +-- PermissionDeniedError  401/403
 +-- TransientError         503, the only kind jobs retry
      +-- OverloadedError   503 (the write queue is full)
      +-- RateLimitedError  429 (a source sends faster than its limit)

Messages name the field, the value and the fix, with values in backticks. `web/errors.py`
alone maps these to HTTP; the CLI prints the message and exits non-zero.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClosedloopError",
    "ConflictError",
    "InvalidInputError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "TransientError",
    "invalid_from_validation",
    "parse_definition",
]


class ClosedloopError(Exception):
    """Base of every error closedloop raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(ClosedloopError):
    """The named object does not exist."""


class ConflictError(ClosedloopError):
    """The object exists already or is in a state that forbids the change."""


class InvalidInputError(ClosedloopError):
    """Input was rejected; `field` names where (dotted path) and `reason` what is wrong."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class PayloadTooLargeError(InvalidInputError):
    """A request, an event or a decompressed body is over a configured limit."""


class PermissionDeniedError(ClosedloopError):
    """Missing, unknown or disabled credentials, or a role without the right."""


class TransientError(ClosedloopError):
    """A fault that may pass (database down, overload): retry later."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OverloadedError(TransientError):
    """The write queue is full: the request was not accepted."""


class RateLimitedError(TransientError):
    """The source sent more than its rate limit allows: nothing was accepted."""


def invalid_from_validation(exc: Any, *, root: str) -> InvalidInputError:
    """The first error of a pydantic `ValidationError` as an `InvalidInputError` whose field
    is a path such as `rules[2].weight` (`root` when the document itself is wrong)."""
    first = exc.errors()[0]
    field = ""
    for part in first.get("loc", ()):
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    field = field or root
    message = str(first["msg"]).removeprefix("Value error, ")
    return InvalidInputError(f"invalid `{field}`: {message}", field=field)


def parse_definition(model: Any, document: Any, *, name: str | None, root: str, shape: str) -> Any:
    """`document` (from YAML or JSON, `kind` ignored; `name` from the path wins) validated by
    the pydantic `model`; the error names the first bad field."""
    if not isinstance(document, dict):
        raise InvalidInputError(f"a {root} is {shape}", field=root)
    body = {k: v for k, v in document.items() if k != "kind"}
    if name is not None:
        body["name"] = name
    try:
        return model.model_validate(body)
    except ValueError as exc:  # pydantic's ValidationError
        if not hasattr(exc, "errors"):
            raise
        raise invalid_from_validation(exc, root=root) from exc

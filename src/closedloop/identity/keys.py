"""The customer key shared with other systems: a keyed hash of the normalised e-mail.

`HMAC-SHA256(secret, email)`, never a plain hash (a dictionary of e-mail addresses reverses
a plain one). The key carries its version (`v1.` + 64 hex digits), so that a new secret can
re-key every profile and a feed can deliver the old-to-new mapping.
"""

from __future__ import annotations

import hmac
import re

from closedloop.errors import InvalidInputError
from closedloop.identity.normalise import normalise_email

__all__ = ["customer_key", "is_customer_key"]

_KEY = re.compile(r"^v[1-9][0-9]{0,3}\.[0-9a-f]{64}$")


def customer_key(email: str, *, secret: bytes, version: int = 1) -> str:
    """The customer key of `email` (normalised here, so every spelling gives one key)."""
    if not secret:
        raise InvalidInputError(
            "no secret for the customer key: set `CLOSEDLOOP_SECRET_KEY` (`closedloop init`)",
            field="secret_key",
        )
    if not 1 <= version <= 9999:
        raise InvalidInputError(
            f"invalid key version `{version}`: expected 1 to 9999", field="version"
        )
    normalised = normalise_email(email)
    if normalised.value is None:
        problem = normalised.problem.problem if normalised.problem else "empty"
        raise InvalidInputError(f"no customer key for `{email[:80]}`: {problem}", field="email")
    # The one-shot `hmac.digest` (OpenSSL's HMAC in one call): the same digest as
    # `hmac.new(...).hexdigest()`, in 1.8 µs instead of 2.8 µs.
    digest = hmac.digest(secret, normalised.value.encode("utf-8"), "sha256").hex()
    return f"v{version}.{digest}"


def is_customer_key(value: str) -> bool:
    """Whether `value` has the shape of a customer key (to route a look-up)."""
    return bool(_KEY.fullmatch(value))

"""Forwarding an answer's identify to other tools (Segment-compatible HTTP API), at once,
with retries: the CRM, the analytics suite and the e-mail tool see `nps_rating` too.

The outbound host is checked like a feed's destination (no private addresses unless
allowed), the write key is a named secret, and redirects are not followed.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import httpx

from closedloop.config import ForwardTarget, Settings
from closedloop.feeds.destinations import secret
from closedloop.outbound import DeliveryError, check_host

__all__ = ["forward_identify"]

_log = logging.getLogger(__name__)
_ATTEMPTS = 3


def _post(target: ForwardTarget, settings: Settings, message: dict[str, Any]) -> None:
    url = httpx.URL(target.url)
    if url.scheme != "https" and not settings.feeds.allow_plain_http:
        raise DeliveryError("forwarding needs `https://`", transient=False)
    check_host(url.host, url.port or (443 if url.scheme == "https" else 80), settings)
    key = secret(settings, target.write_key_secret)
    auth = base64.b64encode(f"{key}:".encode()).decode()
    with httpx.Client(timeout=settings.feeds.timeout_seconds, follow_redirects=False) as client:
        try:
            response = client.post(
                target.url, json=message, headers={"Authorization": f"Basic {auth}"}
            )
        except httpx.TransportError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", transient=True) from None
    if response.status_code >= 500 or response.status_code == 429:
        raise DeliveryError(f"answered {response.status_code}", transient=True)
    if response.status_code >= 300:
        raise DeliveryError(f"answered {response.status_code}", transient=False)


def forward_identify(
    settings: Settings, message: dict[str, Any], *, consent: dict[str, Any]
) -> dict[str, str]:
    """Send `message` to every configured endpoint whose purpose the customer's `consent`
    grants; per URL `ok`, `no consent for ...` or the error (logged)."""
    results: dict[str, str] = {}
    for target in settings.surveys.forward:
        if not settings.profiles.granted(consent, target.purpose):
            results[target.url] = f"no consent for `{target.purpose}`"
            continue
        for attempt in range(_ATTEMPTS):
            try:
                _post(target, settings, message)
                results[target.url] = "ok"
                break
            except DeliveryError as exc:
                results[target.url] = exc.message
                if not exc.transient or attempt == _ATTEMPTS - 1:
                    _log.warning("surveys: forwarding to %s failed: %s", target.url, exc.message)
                    break
                time.sleep(min(settings.feeds.backoff_seconds * 2**attempt, 30))
    return results

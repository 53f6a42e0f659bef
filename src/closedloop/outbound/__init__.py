"""The one outbound guard: every host the hub connects to (feed destinations, webhooks,
forwarding to other tools, the SMTP server) is resolved and each address checked first.

A loopback, private, link-local, multicast or reserved address is refused unless
`FEEDS__ALLOWED_HOSTS` names the host or its network (S7: SSRF to the metadata service or an
internal admin port through a destination someone typed in).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import Any

from closedloop.config import Settings

__all__ = ["DeliveryError", "check_host"]


class DeliveryError(Exception):
    """A delivery failed; `transient` ones are retried."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


def _allowed(
    host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, allowed: Any
) -> bool:
    for entry in allowed:
        if entry == host:
            return True
        with contextlib.suppress(ValueError):
            if address in ipaddress.ip_network(entry, strict=False):
                return True
    return False


def check_host(host: str, port: int, settings: Settings) -> list[str]:
    """The host's addresses, each checked: a loopback, private, link-local, multicast or
    reserved one is refused unless `FEEDS__ALLOWED_HOSTS` allows it."""
    name = host.strip("[]")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DeliveryError(f"cannot resolve `{host}`: {exc.strerror}", transient=True) from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global and not _allowed(name, address, settings.feeds.allowed_hosts):
            raise DeliveryError(
                f"`{host}` resolves to {address}, a loopback, private, link-local or reserved "
                "address: refused (allow it in `CLOSEDLOOP_FEEDS__ALLOWED_HOSTS` if intended)",
                transient=False,
            )
        addresses.append(text)
    return addresses

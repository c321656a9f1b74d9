"""Where a request came from: the socket's peer, or the client a trusted reverse proxy names.

A client can write anything into ``X-Forwarded-For``; believing it would let anyone put a source of their
choice into the audit trail and dodge per-source throttling. The header counts only when the peer itself is a
proxy the operator named in ``GATEPASS_TRUSTED_PROXIES`` (addresses or CIDR networks), and then the address
taken is the right-most one not in that list: the last hop a trusted proxy saw (RFC 7239 §5.2 reasoning).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(text: str) -> tuple[Network, ...]:
    """``"10.0.0.5, 10.1.0.0/16"`` → networks; a clear error for anything that is not an address or network."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"GATEPASS_TRUSTED_PROXIES: '{item[:60]}' is not an IP address or network "
                             "(for example 10.0.0.5 or 10.1.0.0/16)") from None
    return tuple(networks)


def _is_trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def source_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client's address as far as it can be believed (see the module docstring)."""
    if not peer or not forwarded_for or not trusted or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a hop that is not an address: the header is not to be believed at all
        if not _is_trusted(hop, trusted):
            return hop
    return peer


class _HasTrustedProxies(Protocol):
    @property
    def trusted_proxies(self) -> tuple[Network, ...]: ...


def client_address(request: HTTPConnection, settings: _HasTrustedProxies) -> str | None:
    """``source_address`` for a Starlette request (API and web pages alike)."""
    peer = request.client.host if request.client else None
    # Several header lines are one comma-separated list (RFC 9110 §5.3); taking only the first would believe a
    # line the client wrote itself when a proxy adds its own line instead of appending to the client's.
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for")) or None
    return source_address(peer, forwarded, settings.trusted_proxies)

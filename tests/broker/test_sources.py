"""Which address a request came from: the peer, unless a named trusted proxy forwarded it (broker/sources.py)."""

from __future__ import annotations

import pytest

from broker.sources import parse_trusted_proxies, source_address

PROXIES = parse_trusted_proxies("10.0.0.5, 10.1.0.0/16")


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("203.0.113.9", None, "203.0.113.9"),
    # A client that is not a trusted proxy writes its own header: ignored.
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
    # The trusted proxy names its client: believed.
    ("10.0.0.5", "198.51.100.1", "198.51.100.1"),
    # A client that prepends a forged hop: the right-most untrusted hop is the real client.
    ("10.0.0.5", "1.2.3.4, 198.51.100.1", "198.51.100.1"),
    # Two trusted proxies in a row.
    ("10.0.0.5", "198.51.100.1, 10.1.4.4", "198.51.100.1"),
    # Only trusted hops: the peer.
    ("10.0.0.5", "10.1.4.4", "10.0.0.5"),
    # Garbage in the header: not believed at all.
    ("10.0.0.5", "198.51.100.1, not-an-address", "10.0.0.5"),
    ("10.0.0.5", "", "10.0.0.5"),
])
def test_source_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert source_address(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_the_header_never_counts() -> None:
    assert source_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


def test_a_bad_proxy_list_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an IP address or network"):
        parse_trusted_proxies("10.0.0.5, proxy.example")

"""The client IP: X-Forwarded-For read from the right, past trusted proxies only."""

from __future__ import annotations

import pytest
from starlette.types import Scope

from marketgraph.middleware import client_ip
from marketgraph.proxies import TrustedProxies, parse_trusted_proxies

LOCAL = ["127.0.0.1"]
PROXIES = ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]


def scope(peer: str | None, *forwarded: str | bytes) -> Scope:
    """An HTTP scope from `peer` with one X-Forwarded-For line per value."""
    headers = [(b"host", b"testserver")]
    for value in forwarded:
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        headers.append((b"x-forwarded-for", raw))
    return {"type": "http", "client": (peer, 50000) if peer else None, "headers": headers}


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_ip(scope("198.51.100.7", "203.0.113.1"), LOCAL) == "198.51.100.7"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_ip(scope("127.0.0.1"), LOCAL) == "127.0.0.1"


def test_addresses_the_client_prepends_are_ignored() -> None:
    # The proxy at 127.0.0.1 appended the address it saw; the rest is the client's say.
    assert client_ip(scope("127.0.0.1", "1.2.3.4, 203.0.113.9"), LOCAL) == "203.0.113.9"
    assert client_ip(scope("127.0.0.1", "1.2.3.4", "203.0.113.9"), LOCAL) == "203.0.113.9"


def test_trusted_hops_are_skipped_from_the_right() -> None:
    forwarded = "6.6.6.6, 203.0.113.5, 10.1.2.3, 10.0.0.7"
    assert client_ip(scope("127.0.0.1", forwarded), PROXIES) == "203.0.113.5"


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.200.3.4", "203.0.113.5", "203.0.113.5"),  # the peer is trusted by its network
        ("11.0.0.1", "203.0.113.5", "11.0.0.1"),  # just outside 10.0.0.0/8
        ("2001:db8::1", "198.51.100.1, 2001:db8:1::9", "198.51.100.1"),
        ("2001:db9::1", "198.51.100.1", "2001:db9::1"),
        ("::ffff:10.0.0.1", "203.0.113.5", "203.0.113.5"),  # IPv4-mapped peer
        ("127.0.0.1", "::ffff:203.0.113.5", "203.0.113.5"),
    ],
)
def test_cidr_networks_and_both_families(peer: str, forwarded: str, client: str) -> None:
    assert client_ip(scope(peer, forwarded), PROXIES) == client


def test_a_network_with_host_bits_is_the_network() -> None:
    assert client_ip(scope("10.9.9.9", "203.0.113.5"), ["10.0.0.1/8"]) == "203.0.113.5"


def test_when_every_hop_is_trusted_the_left_most_is_the_client() -> None:
    assert client_ip(scope("127.0.0.1", "10.0.0.1, 10.0.0.2"), PROXIES) == "10.0.0.1"


def test_star_trusts_every_peer_and_takes_the_left_most_address() -> None:
    assert client_ip(scope("8.8.8.8", "198.51.100.1, 203.0.113.2"), ["*"]) == "198.51.100.1"
    assert client_ip(scope("8.8.8.8"), ["*"]) == "8.8.8.8"
    assert client_ip(scope("8.8.8.8", "garbage, 203.0.113.2"), ["*"]) == "8.8.8.8"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("203.0.113.9:5555", "203.0.113.9"),
        ("[2001:db8:5::1]:443", "2001:db8:5::1"),
        ("2001:DB8:5:0::1", "2001:db8:5::1"),  # one spelling per address
        ("fe80::1%any-text-at-all", "fe80::1"),
    ],
)
def test_ports_are_dropped_and_addresses_canonical(forwarded: str, client: str) -> None:
    assert client_ip(scope("127.0.0.1", forwarded), LOCAL) == client


@pytest.mark.parametrize(
    "forwarded",
    [
        "garbage",
        "",
        " , ",
        "203.0.113.9, not-an-ip",
        "203.0.113.9,",
        "999.1.1.1",
        "203.0.113.9:port",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[not-v6]:80",
        "unknown",
        "_hidden",
        "1.2.3.4" * 2000,
        b"\xff\xfe\x00, 203.0.113.9 \x01",
    ],
)
def test_a_garbled_hop_ends_the_walk_at_the_proxy_that_wrote_it(forwarded: str | bytes) -> None:
    assert client_ip(scope("127.0.0.1", forwarded), LOCAL) == "127.0.0.1"


def test_garbage_left_of_the_client_is_never_reached() -> None:
    assert client_ip(scope("127.0.0.1", "not-an-ip, 203.0.113.9"), LOCAL) == "203.0.113.9"
    assert client_ip(scope("127.0.0.1", "junk, 10.0.0.3"), PROXIES) == "10.0.0.3"


def test_a_scope_without_a_peer() -> None:
    assert client_ip(scope(None, "203.0.113.9"), LOCAL) == "unknown"


def test_names_that_are_not_addresses_match_a_peer_of_that_name() -> None:
    assert client_ip(scope("testclient", "203.0.113.9"), ["testclient"]) == "203.0.113.9"
    assert client_ip(scope("testclient", "203.0.113.9"), LOCAL) == "testclient"


def test_the_setting_is_parsed_once() -> None:
    assert parse_trusted_proxies(("127.0.0.1",)) is parse_trusted_proxies(("127.0.0.1",))
    prebuilt = TrustedProxies(PROXIES)
    assert client_ip(scope("10.0.0.1", "203.0.113.5"), prebuilt) == "203.0.113.5"

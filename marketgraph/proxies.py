"""Trusted proxies (FORWARDED_ALLOW_IPS) and the client address an X-Forwarded-For chain names."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers whose X-Forwarded-For is believed: addresses, networks (CIDR), or `*` for all.

    Entries that are neither (a Unix socket's name, say) match a peer of exactly that name,
    as in uvicorn's ProxyHeadersMiddleware.
    """

    def __init__(self, entries: Sequence[str]) -> None:
        self.trust_all = "*" in entries
        self._addresses: set[IPAddress] = set()
        self._networks: list[IPNetwork] = []
        self._names: set[str] = set()
        for entry in (e.strip() for e in entries):
            try:
                if "/" in entry:
                    # strict=False: 10.0.0.1/8 means 10.0.0.0/8, not a silently unmatched name.
                    self._networks.append(ipaddress.ip_network(entry, strict=False))
                else:
                    self._addresses.add(_canonical(ipaddress.ip_address(entry)))
            except ValueError:
                self._names.add(entry)

    def trusts(self, host: str) -> bool:
        """Whether `host` (an address or a peer's name) is a trusted proxy."""
        ip = parse_address(host)
        if ip is None:
            return self.trust_all or host in self._names
        return self._trusts_address(ip)

    def _trusts_address(self, ip: IPAddress) -> bool:
        return (
            self.trust_all
            or ip in self._addresses
            or any(ip in network for network in self._networks)
        )

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client: `peer`, or when `peer` is trusted, the right-most X-Forwarded-For hop
        that is not a trusted proxy (the left-most hop when every proxy is trusted).

        Each proxy appends the address it received the request from, so only the hops on the
        right, written by our own proxies, are facts; anything left of the first untrusted hop
        is the client's say. A hop that is not an address ends the walk at the trusted proxy
        that wrote it, so a garbled header never hands the client a key of its choice.
        """
        peer_ip = parse_address(peer)
        own = str(peer_ip) if peer_ip is not None else peer
        if not forwarded_for or not self.trusts(peer):
            return own
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        if self.trust_all:
            # `*` believes every hop, so the first is the client (as uvicorn does).
            first = parse_hop(hops[0])
            return str(first) if first is not None else own
        client = own
        for hop in reversed(hops):
            ip = parse_hop(hop)
            if ip is None:
                return client
            client = str(ip)
            if not self._trusts_address(ip):
                return client
        return client


@functools.lru_cache(maxsize=8)
def parse_trusted_proxies(entries: tuple[str, ...]) -> TrustedProxies:
    """`TrustedProxies` of `entries`, parsed once per distinct setting, not per request."""
    return TrustedProxies(entries)


def parse_address(text: str) -> IPAddress | None:
    """`text` as an IP address (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    try:
        return _canonical(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_hop(hop: str) -> IPAddress | None:
    """One X-Forwarded-For entry — `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80` — as an address."""
    if hop.startswith("["):
        host, bracket, rest = hop[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return parse_address(host)
    if hop.count(":") == 1:
        host, _, port = hop.partition(":")
        return parse_address(host) if port.isdigit() else None
    return parse_address(hop)


def _canonical(ip: IPAddress) -> IPAddress:
    # One client, one spelling: a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d, and
    # a zone (fe80::1%eth0) names an interface of the host that wrote it, not the client.
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:
            return ipaddress.IPv6Address(ip.packed)
    return ip

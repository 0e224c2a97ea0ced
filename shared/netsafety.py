"""Network safety for servers a user names (IMAP, SMTP, OAuth endpoints): which resolved
addresses may be dialled, checked after DNS resolution at every connect (§6 Network safety).

A user who may type a host name must not be able to make our processes reach what only they
can reach: loopback, private networks, link-local (cloud metadata at 169.254.169.254),
CGNAT, multicast, unspecified and reserved addresses — nor the same addresses dressed as IPv6
(``::ffff:127.0.0.1``, 6to4, NAT64). The operator lets private servers through with
``INBOXLOG_ALLOWED_PRIVATE_NETWORKS``.

A name may resolve to several addresses. Only the addresses that pass are ever dialled, and
the name is refused only when none pass: a name resolving to one public and one private
address can reach the public one and never the private one, so refusing it outright would
protect nothing more. The check runs again at every connect, on the addresses just resolved,
and the socket goes to exactly those: a name that changes its answer after it was saved (DNS
rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from shared.networks import Address, Network, Networks

# socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, name, addr)]
Resolver = Callable[..., Sequence[tuple[Any, ...]]]
SockAddr = tuple[Any, ...]

HOST_NOT_ALLOWED = "host_not_allowed"
HOST_NOT_FOUND = "host_not_found"


class NetworkRefused(OSError):
    """Base of the refusals below: the connection was never attempted."""

    code = "network_refused"


class HostNotAllowed(NetworkRefused):
    """Every address the host resolves to is loopback, private, link-local, shared (CGNAT),
    multicast or reserved, and none is inside the allowed private networks."""

    code = HOST_NOT_ALLOWED


class HostNotFound(NetworkRefused):
    """The host name does not resolve (or is not a valid name)."""

    code = HOST_NOT_FOUND


NOT_ALLOWED_SENTENCE = (
    "the server's address is not public (loopback, private, link-local, shared or reserved) "
    "and is not in INBOXLOG_ALLOWED_PRIVATE_NETWORKS"
)
NOT_FOUND_SENTENCE = "the server's name could not be resolved"

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Why each range is refused. Python's ``is_global`` is consulted too, as a catch-all for the
# rest of the IANA special-purpose registries, but it calls multicast, IPv4-compatible IPv6
# (``::7f00:1``) and a few anycast blocks global — hence an explicit table first.
_REFUSED: tuple[tuple[Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),  # "this network" (RFC 791); 0.0.0.0 reaches localhost
    (_V4("10.0.0.0/8"), "private"),  # RFC 1918
    (_V4("100.64.0.0/10"), "shared (CGNAT)"),  # RFC 6598
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),  # RFC 3927; cloud metadata at 169.254.169.254
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments (RFC 6890)
    (_V4("192.0.2.0/24"), "reserved"),  # documentation
    (_V4("192.88.99.0/24"), "reserved"),  # deprecated 6to4 relay anycast (RFC 7526)
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "reserved"),  # benchmarking (RFC 2544)
    (_V4("198.51.100.0/24"), "reserved"),
    (_V4("203.0.113.0/24"), "reserved"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),  # includes 255.255.255.255 broadcast
    (_V6("::/96"), "unspecified, loopback or IPv4-compatible"),  # ::, ::1, ::a.b.c.d
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),  # RFC 8215: translates into private space
    (_V6("100::/64"), "reserved"),  # discard-only (RFC 6666)
    (_V6("2001::/23"), "reserved"),  # IETF protocol assignments, Teredo (2001::/32)
    (_V6("2001:db8::/32"), "reserved"),  # documentation
    (_V6("fc00::/7"), "private (ULA)"),  # RFC 4193
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),  # deprecated (RFC 3879), still routed by some stacks
    (_V6("ff00::/8"), "multicast"),
)
_NAT64 = _V6("64:ff9b::/96")  # RFC 6052: the last 32 bits are the IPv4 address reached


def parse_networks(text: str) -> Networks:
    """The ``INBOXLOG_ALLOWED_PRIVATE_NETWORKS`` setting (comma-separated CIDRs)."""
    return Networks.parse(text)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address really reaches: 6to4 (2002::/16) and NAT64."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: Address) -> str | None:
    """Why ``ip`` may not be dialled (a short label), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # a dual-stack socket dials the IPv4 address itself
            return refusal(ip.ipv4_mapped)
        inner = _embedded_v4(ip)
        if inner is not None:
            why = refusal(inner)
            return f"{why} (embedded in IPv6)" if why else None
    for net, why in _REFUSED:
        if ip.version == net.version and ip in net:
            return why
    if not ip.is_global:
        return "reserved"
    return None


def address_allowed(ip: Address, allowed: Networks) -> bool:
    return allowed.contains(ip) or refusal(ip) is None


def resolve_allowed(
    host: str, port: int, allowed: Networks, resolver: Resolver = socket.getaddrinfo
) -> list[tuple[int, SockAddr]]:
    """Resolve ``host`` and keep the (family, sockaddr) pairs that may be dialled, in the
    resolver's order. Raises :class:`HostNotFound` when it does not resolve and
    :class:`HostNotAllowed` when no address passes."""
    if not host or "\x00" in host:
        raise HostNotFound(NOT_FOUND_SENTENCE)
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # gaierror; an invalid IDNA label
        raise HostNotFound(NOT_FOUND_SENTENCE) from exc
    vetted: list[tuple[int, SockAddr]] = []
    seen = False
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            continue
        seen = True
        if address_allowed(ip, allowed) and (family, sockaddr) not in vetted:
            vetted.append((family, tuple(sockaddr)))
    if not vetted:
        raise HostNotAllowed(NOT_ALLOWED_SENTENCE) if seen else HostNotFound(NOT_FOUND_SENTENCE)
    return vetted


def check_host(
    host: str, port: int, allowed: Networks, resolver: Resolver = socket.getaddrinfo
) -> None:
    """Save-time validation of a server a user names (answer 422 ``host_not_allowed`` /
    ``host_not_found`` on the exception's ``code``). Advisory only: every connect checks
    again, on what the name resolves to then."""
    resolve_allowed(host, port, allowed, resolver)


def create_connection(
    host: str,
    port: int,
    allowed: Networks,
    *,
    timeout: float | None,
    resolver: Resolver = socket.getaddrinfo,
) -> socket.socket:
    """``socket.create_connection`` that dials only vetted addresses, each in turn.

    The caller keeps using ``host`` for everything above TCP (TLS server_hostname, SNI,
    certificate checks): only the choice of IP address is taken away from it.
    """
    last: OSError | None = None
    for family, sockaddr in resolve_allowed(host, port, allowed, resolver):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    assert last is not None  # resolve_allowed returns at least one address
    raise last

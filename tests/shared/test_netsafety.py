"""Which resolved addresses a user-named server may be dialled at (§6 Network safety), with an
injected resolver: no DNS here, and every case is a name resolving to chosen addresses."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import pytest

from shared.netsafety import (
    HostNotAllowed,
    HostNotFound,
    check_host,
    create_connection,
    parse_networks,
    refusal,
    resolve_allowed,
)

NONE = parse_networks("")


def resolver(table: dict[str, Sequence[str]]) -> Any:
    """A getaddrinfo that answers from ``table`` (addresses in order)."""

    def getaddrinfo(host: str, port: int, family: int = 0, type: int = 0) -> list[tuple]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for addr in table[host]:
            if ":" in addr:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port)))
        return out

    return getaddrinfo


REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "255.255.255.255",  # broadcast
    "240.0.0.1",
    "192.0.2.10",  # documentation
    "198.18.0.1",  # benchmarking
    "::",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "fc00::1",  # ULA
    "fd12:3456::1",
    "fe80::1",  # link-local
    "fec0::1",  # site-local
    "ff02::1",  # multicast
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2001:0:4136:e378::1",  # Teredo
    "2001:db8::1",  # documentation
    "100::1",  # discard
]
PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.32.0.1",  # just above 172.16/12
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 of a public address
]


@pytest.mark.parametrize("addr", REFUSED)
def test_non_public_addresses_are_refused(addr: str) -> None:
    resolve = resolver({"imap.evil.example": [addr]})
    with pytest.raises(HostNotAllowed) as err:
        resolve_allowed("imap.evil.example", 993, NONE, resolve)
    assert err.value.code == "host_not_allowed"
    assert addr not in str(err.value)  # what the name resolved to is not told back
    import ipaddress

    assert refusal(ipaddress.ip_address(addr)) is not None


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_pass(addr: str) -> None:
    resolve = resolver({"imap.good.example": [addr]})
    [(family, sockaddr)] = resolve_allowed("imap.good.example", 993, NONE, resolve)
    assert sockaddr[0] == addr and sockaddr[1] == 993
    assert family == (socket.AF_INET6 if ":" in addr else socket.AF_INET)


def test_a_mixed_answer_keeps_only_the_public_addresses() -> None:
    """A name resolving to one public and one private address must not reach the private one:
    only the vetted addresses are returned (and dialled)."""
    resolve = resolver({"mixed.example": ["127.0.0.1", "93.184.216.34", "fd00::1", "::1"]})
    got = resolve_allowed("mixed.example", 143, NONE, resolve)
    assert [sockaddr[0] for _, sockaddr in got] == ["93.184.216.34"]


def test_allowed_networks_let_private_servers_through() -> None:
    allowed = parse_networks("10.0.0.0/8, 127.0.0.0/8 ,fd00::/8")
    resolve = resolver(
        {
            "corp.example": ["10.9.8.7"],
            "local.example": ["127.0.0.1"],
            "mapped.example": ["::ffff:127.0.0.1"],
            "ula.example": ["fd00::5"],
            "meta.example": ["169.254.169.254"],
        }
    )
    for host, addr in (
        ("corp.example", "10.9.8.7"),
        ("local.example", "127.0.0.1"),
        ("mapped.example", "::ffff:127.0.0.1"),
        ("ula.example", "fd00::5"),
    ):
        [(_, sockaddr)] = resolve_allowed(host, 143, allowed, resolve)
        assert sockaddr[0] == addr
    with pytest.raises(HostNotAllowed):  # not inside any allowed network
        resolve_allowed("meta.example", 143, allowed, resolve)


def test_names_that_do_not_resolve() -> None:
    resolve = resolver({})
    for host in ("nowhere.example", "", "a\x00b"):
        with pytest.raises(HostNotFound) as err:
            resolve_allowed(host, 993, NONE, resolve)
        assert err.value.code == "host_not_found"


def test_check_host_is_the_same_rule_for_save_time() -> None:
    resolve = resolver({"ok.example": ["8.8.4.4"], "meta.example": ["169.254.169.254"]})
    check_host("ok.example", 993, NONE, resolve)
    with pytest.raises(HostNotAllowed):
        check_host("meta.example", 993, NONE, resolve)
    with pytest.raises(HostNotFound):
        check_host("missing.example", 993, NONE, resolve)


def test_a_bad_allowed_networks_entry_is_refused_with_its_text() -> None:
    assert not parse_networks(" , ")
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        parse_networks("127.0.0.0/8,10.0.0.0/33")


def test_create_connection_never_dials_a_refused_address() -> None:
    """The connect-time check: a listener on 127.0.0.1 stays untouched when the name resolves
    there and loopback is not allowed; with loopback allowed the same call connects."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        resolve = resolver({"rebind.example": ["127.0.0.1"]})
        with pytest.raises(HostNotAllowed):
            create_connection("rebind.example", port, NONE, timeout=5, resolver=resolve)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody came
        sock = create_connection(
            "rebind.example", port, parse_networks("127.0.0.0/8"), timeout=5, resolver=resolve
        )
        with sock:
            peer, _ = listener.accept()
            peer.close()
            assert sock.getpeername() == ("127.0.0.1", port)

"""SMTP dialogues as transcripts, against the real protocol code with a fake directory and store:
every reply line is asserted, no database is needed, and each runs in milliseconds."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.smtp.directory import Route
from gateway.smtp.handler import IntakeHandler
from gateway.smtp.ratelimit import RateLimiter
from gateway.smtp.server import GatewayServer
from shared.account_settings import AccountSettings
from shared.intake import IncomingMessage
from shared.networks import Networks
from shared.rules.logging_decision import AccountFacts, UserFacts

BCC = "log-abc@log.localhost"
TEAM = "team-xyz@log.localhost"


def facts(**settings: Any) -> AccountFacts:
    alice = UserFacts(1, frozenset({"alice@ours.example"}))
    return AccountFacts(AccountSettings(**settings), (alice,), frozenset({"alice@ours.example"}))


@dataclass
class FakeDirectory:
    routes: dict[str, Route] = field(
        default_factory=lambda: {BCC: Route("bcc", 1, None), TEAM: Route("team", 1, 7)}
    )
    facts: dict[int, AccountFacts] = field(default_factory=lambda: {1: facts()})
    down: bool = False
    lookups: list[str] = field(default_factory=list)

    def at_logging_domain(self, address: str) -> bool:
        return address.endswith("@log.localhost")

    def cached_route(self, address: str) -> Route | None:
        return None  # always ask: the lookups are what some transcripts check

    def known_unknown(self, address: str) -> bool:
        return False

    def lookup_route(self, address: str) -> Route | None:
        self.lookups.append(address)
        if self.down:
            raise ConnectionError("database gone")
        return self.routes.get(address)

    def cached_policies(self, account_ids: set[int]) -> None:
        return None  # always read: the transcripts check what fresh facts decide

    def current_facts(self, account_ids: set[int]) -> dict[int, AccountFacts]:
        return {a: self.facts[a] for a in account_ids}


@dataclass
class FakeStore:
    items: list[IncomingMessage] = field(default_factory=list)
    down: bool = False

    async def store(
        self, items: Sequence[IncomingMessage], assumed: dict[int, int] | None = None
    ) -> list[int | None]:
        if self.down:
            raise ConnectionError("disk on fire")
        self.items.extend(items)
        return list(range(len(self.items) - len(items) + 1, len(self.items) + 1))


class Gateway:
    def __init__(self, *, trusted_proxies: Networks | None = None, **kw: Any) -> None:
        self.directory, self.store = FakeDirectory(), FakeStore()
        self.handler = IntakeHandler(
            directory=self.directory,
            store=self.store,
            enqueuer=None,
            max_recipients=kw.pop("max_recipients", 3),
            client_limiter=kw.pop("client_limiter", RateLimiter(1000)),
            account_limiter=RateLimiter(1000),
        )
        self.server = GatewayServer(
            self.handler,
            host="127.0.0.1",
            port=0,
            max_message_bytes=10_000,
            idle_timeout=10,
            trusted_proxies=trusted_proxies,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.drain_and_stop(1), self.loop).result(10)

        async def cancel_sessions() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_sessions(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def gw() -> Iterator[Gateway]:
    g = Gateway()
    yield g
    g.close()


def replay(port: int, script: str, *, preamble: bytes = b"") -> None:
    """Play the ``C:`` lines and assert that the ``S:`` lines are exactly what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if preamble:
            sock.sendall(preamble)
        f = sock.makefile("rwb")
        lines = [line.strip() for line in script.strip().splitlines() if line.strip()]
        got: list[str] = []
        expected: list[str] = []
        for line in lines:
            who, _, text = line.partition(": ")
            if who == "C":
                f.write(text.encode() + b"\r\n")
                f.flush()
            elif who == "D":  # a DATA line, sent as is
                f.write(text.encode() + b"\r\n")
            elif who == "S":
                expected.append(text)
                got.append(f.readline().decode().rstrip("\r\n"))
        assert got == expected


def test_a_message_to_an_intake_address_is_stored_with_its_envelope(gw: Gateway) -> None:
    replay(
        gw.port,
        f"""
        S: 220 inboxlog inboxlog ESMTP
        C: EHLO client.example
        S: 250-inboxlog
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250 HELP
        C: MAIL FROM:<alice@ours.example>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<ken@elsewhere.example>
        S: 550 5.1.1 No such intake address here (this server does not relay)
        C: RCPT TO:<log-nobody@log.localhost>
        S: 550 5.1.1 No such intake address here (this server does not relay)
        C: RCPT TO:<{BCC.upper()}>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        D: From: Alice <alice@ours.example>
        D: To: ken@acme.example
        D: Subject: hi
        D:
        D: hello
        C: .
        S: 250 2.0.0 Message accepted for logging
        C: QUIT
        S: 221 Bye
        """,
    )
    [item] = gw.store.items
    assert (item.source, item.account_id, item.envelope_from, item.sender_verdict) == (
        "bcc",
        1,
        "alice@ours.example",
        None,
    )
    assert item.client_address == "127.0.0.1"
    # Only addresses at the logging domain are looked up, and each once.
    assert gw.directory.lookups == ["log-nobody@log.localhost", BCC]


def test_an_unknown_sender_is_550_at_the_end_of_data_and_nothing_is_stored(gw: Gateway) -> None:
    replay(
        gw.port,
        f"""
        S: 220 inboxlog inboxlog ESMTP
        C: HELO client.example
        S: 250 inboxlog
        C: MAIL FROM:<mallory@evil.example>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<{BCC}>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        D: From: mallory@evil.example
        D:
        D: log this
        C: .
        S: 550 5.7.1 Sender is not allowed to log mail to this address
        """,
    )
    assert gw.store.items == []


def test_a_copy_refused_for_one_route_is_kept_for_its_decision(gw: Gateway) -> None:
    """Accepted for the team inbox, refused for the account's bcc address: 250, and the refused
    copy is stored with its verdict, so it gets a ``rejected`` decision instead of vanishing."""
    replay(
        gw.port,
        f"""
        S: 220 inboxlog inboxlog ESMTP
        C: HELO client.example
        S: 250 inboxlog
        C: MAIL FROM:<cust@cust.example>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<{TEAM}>
        S: 250 2.1.5 Recipient OK
        C: RCPT TO:<{BCC}>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        D: From: cust@cust.example
        D:
        D: hello team
        C: .
        S: 250 2.0.0 Message accepted for logging
        """,
    )
    assert [(i.source, i.sender_verdict) for i in gw.store.items] == [
        ("team", None),
        ("bcc", "refused"),
    ]


def test_an_internal_from_to_a_team_address_is_judged_unauthenticated(gw: Gateway) -> None:
    replay(
        gw.port,
        f"""
        S: 220 inboxlog inboxlog ESMTP
        C: HELO client.example
        S: 250 inboxlog
        C: MAIL FROM:<alice@ours.example>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<{TEAM}>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        D: From: alice@ours.example
        D: To: cust@cust.example
        D:
        D: a forged reply
        C: .
        S: 250 2.0.0 Message accepted for logging
        """,
    )
    assert [(i.source, i.sender_verdict) for i in gw.store.items] == [("team", "unauthenticated")]


def test_storage_and_directory_failures_are_451_4_3_0(gw: Gateway) -> None:
    gw.directory.down = True
    replay(
        gw.port,
        f"""
        S: 220 inboxlog inboxlog ESMTP
        C: HELO client.example
        S: 250 inboxlog
        C: MAIL FROM:<alice@ours.example>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<{BCC}>
        S: 451 4.3.0 Recipient directory unavailable, please retry later
        """,
    )
    gw.directory.down, gw.store.down = False, True
    replay(
        gw.port,
        f"""
        S: 220 inboxlog inboxlog ESMTP
        C: HELO client.example
        S: 250 inboxlog
        C: MAIL FROM:<alice@ours.example>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<{BCC}>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        D: From: alice@ours.example
        D:
        D: x
        C: .
        S: 451 4.3.0 Temporary storage failure, please retry later
        """,
    )


def test_a_failure_inside_a_hook_is_answered_by_the_handler_without_its_words() -> None:
    class Broken(RateLimiter):
        def allow(self, key: object, now: float | None = None) -> bool:
            raise KeyError("internal-secret-detail")

    g = Gateway(client_limiter=Broken(1))
    try:
        replay(
            g.port,
            """
            S: 220 inboxlog inboxlog ESMTP
            C: HELO client.example
            S: 250 inboxlog
            C: MAIL FROM:<alice@ours.example>
            S: 451 4.3.0 Internal error, please retry later
            C: NOOP
            S: 250 OK
            """,
        )
        assert g.handler.stats.replies == {"451": 1}
    finally:
        g.close()


def test_too_many_recipients_is_452_4_5_3(gw: Gateway) -> None:
    replay(
        gw.port,
        f"""
        S: 220 inboxlog inboxlog ESMTP
        C: HELO client.example
        S: 250 inboxlog
        C: MAIL FROM:<alice@ours.example>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<{BCC}>
        S: 250 2.1.5 Recipient OK
        C: RCPT TO:<{BCC}>
        S: 250 2.1.5 Recipient OK
        C: RCPT TO:<{TEAM}>
        S: 250 2.1.5 Recipient OK
        C: RCPT TO:<{TEAM}>
        S: 452 4.5.3 Too many recipients
        """,
    )


def _proxy_v2(src: str, dst: str, sport: int, dport: int) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n",
        _proxy_v2("203.0.113.7", "192.0.2.1", 1, 25),
    ],
    ids=["v1", "v2"],
)
def test_behind_a_trusted_proxy_the_client_is_the_one_the_proxy_names(header: bytes) -> None:
    g = Gateway(trusted_proxies=Networks.parse("127.0.0.0/8"), client_limiter=RateLimiter(1))
    try:
        script = f"""
            S: 220 inboxlog inboxlog ESMTP
            C: HELO client.example
            S: 250 inboxlog
            C: MAIL FROM:<alice@ours.example>
            S: 250 2.1.0 Sender OK
            C: RCPT TO:<{BCC}>
            S: 250 2.1.5 Recipient OK
            C: DATA
            S: 354 End data with <CR><LF>.<CR><LF>
            D: From: alice@ours.example
            D:
            D: x
            C: .
            S: 250 2.0.0 Message accepted for logging
            C: MAIL FROM:<alice@ours.example>
            S: 421 4.7.0 Too many messages, slow down and retry later
            """
        replay(g.port, script, preamble=header)
        assert [i.client_address for i in g.store.items] == ["203.0.113.7"]
        # The limit counted the named client, not the proxy: another client still passes.
        other = header.replace(b"203.0.113.7", b"203.0.113.8").replace(
            socket.inet_aton("203.0.113.7"), socket.inet_aton("203.0.113.8")
        )
        replay(g.port, script, preamble=other)
        assert [i.client_address for i in g.store.items] == ["203.0.113.7", "203.0.113.8"]
    finally:
        g.close()


def test_proxy_protocol_refuses_connections_from_anyone_but_the_trusted_proxies() -> None:
    g = Gateway(trusted_proxies=Networks.parse("10.0.0.0/8"))
    try:
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as sock:
            sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n")
            try:
                answer = sock.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed: no greeting, no PROXY header believed
        assert g.store.items == []
    finally:
        g.close()

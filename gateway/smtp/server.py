"""The SMTP server: aiosmtpd's protocol with enhanced replies, connection bounds and draining."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import Counter
from typing import Any, cast

from aiosmtpd.smtp import MISSING, SMTP, syntax

from gateway.smtp import replies
from gateway.smtp.data import Refusal, read_data
from gateway.smtp.handler import IntakeHandler
from gateway.smtp.hooks import NamedHooks
from shared.networks import Networks

log = logging.getLogger("inboxlog.gateway")

HOSTNAME = "inboxlog"
# The longest a DATA transfer may take, however steadily the bytes arrive (RFC 5321's 10 min).
DATA_DEADLINE_SECONDS = 600.0
DATA_PROGRESS_BYTES = 16 * 1024
# How long a load balancer may take to send the PROXY header after connecting.
PROXY_TIMEOUT_SECONDS = 5.0


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# <dot-atom@dot-atom>, then either the end or whitespace and no comment (a CFWS that aiosmtpd's
# parser would read differently).
_SIMPLE_PATH = re.compile(
    rf"<(({_ATOM}(?:\.{_ATOM})*)@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(?=[^ \t(])|$)"
)


class IntakeSMTP(NamedHooks, SMTP):
    """aiosmtpd's SMTP with enhanced status codes, a bound on connections per client and, behind
    a load balancer, the client taken from the PROXY protocol header of trusted proxies only."""

    hook_prefixes = ("smtp_", "auth_")  # what aiosmtpd's __init__ looks up (gateway/smtp/hooks.py)

    # Real mail breaks RFC 5321's 1,000-octet line limit (unwrapped HTML, long base64); refusing
    # it would lose mail, so DATA lines may be long. The message size limit still applies.
    line_length_limit = 1 << 20

    def __init__(
        self,
        handler: IntakeHandler,
        *,
        connections: Counter[str | None],
        max_per_client: int,
        trusted_proxies: Networks | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("decode_data"):
            raise ValueError("the handlers read the message as bytes: decode_data must be off")
        super().__init__(handler, **kwargs)
        self._connections, self._max_per_client = connections, max_per_client
        self._trusted_proxies = trusted_proxies
        self._client: str | None = None
        self._counted = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parsing, with the common form (``<local@domain>`` in dot-atoms, then
        the parameters) matched by one regex: aiosmtpd's RFC 5322 parser defines a class and
        builds a token tree at every MAIL and RCPT. Anything else goes to that parser."""
        simple = _SIMPLE_PATH.match(arg)
        if simple is None or (self.local_part_limit and len(simple[2]) > self.local_part_limit):
            return super()._getaddr(arg)
        return simple[1], arg[simple.end() :]

    def admit_client(self, client: str | None) -> bool:
        """Count this connection for ``client``; False when the client has too many."""
        self._client, self._counted = client, True
        self._connections[client] += 1
        return self._connections[client] <= self._max_per_client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        peer_ip = peer[0] if peer else None
        super().connection_made(transport)
        if self._trusted_proxies is not None:
            # PROXY protocol: the client is named by the header that comes first; only our
            # load balancers may send one (anyone else could claim any address).
            if peer_ip is None or not self._trusted_proxies.contains(peer_ip):
                log.warning("connection from an untrusted proxy refused")
                transport.close()
            return
        if not self.admit_client(peer_ip):
            # A stream server's transport writes; asyncio types this parameter as the base class.
            writer = cast(asyncio.WriteTransport, transport)
            writer.write((replies.TOO_MANY_CONNECTIONS + "\r\n").encode())
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._connections[self._client] -= 1
            if self._connections[self._client] <= 0:
                del self._connections[self._client]
        if self.session is not None:
            self.event_handler.transactions.discard(id(self.session))
        super().connection_lost(exc)

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = replies.rewrite(status)
        await super().push(status)

    # aiosmtpd restarts its idle timer only when a command completes, so a large message from
    # a slow but honest client would be cut off after one idle timeout. During DATA, each
    # further DATA_PROGRESS_BYTES received count as activity (RFC 5321 4.5.3.2 allows 3 min per
    # data block), up to an overall deadline; a client trickling a few bytes at a time still
    # times out.
    _data_deadline: float | None = None
    _data_progress = 0

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, with the section read in bulk (gateway/smtp/data.py)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._data_deadline = self.loop.time() + DATA_DEADLINE_SECONDS
        self._data_progress = 0
        try:
            content = await read_data(
                self._reader, size_limit=self.data_size_limit, line_limit=self.line_length_limit
            )
        except (asyncio.CancelledError, asyncio.IncompleteReadError):
            self._writer.close()  # the client went away mid-section (aiosmtpd does the same)
            raise
        finally:
            self._data_deadline = None
        if isinstance(content, Refusal):
            self._set_post_data_state()
            await self.push(content.value)
            return
        self.envelope.original_content = self.envelope.content = content  # bytes: decode_data off
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._data_deadline is None:
            return
        self._data_progress += len(data)
        if self._data_progress >= DATA_PROGRESS_BYTES and self.loop.time() < self._data_deadline:
            self._data_progress = 0
            self._reset_timeout()


class GatewayServer:
    def __init__(
        self,
        handler: IntakeHandler,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        idle_timeout: float,
        tls_context: ssl.SSLContext | None = None,
        max_connections_per_client: int = 20,
        trusted_proxies: Networks | None = None,
    ) -> None:
        self.handler, self.host, self.port = handler, host, port
        self.max_bytes, self.idle_timeout, self.tls_context = (
            max_message_bytes,
            idle_timeout,
            tls_context,
        )
        self.max_per_client = max_connections_per_client
        # Set: PROXY protocol on, from these networks only.
        self.trusted_proxies = trusted_proxies
        self.connections: Counter[str | None] = Counter()
        self.server: asyncio.base_events.Server | None = None

    def _factory(self) -> IntakeSMTP:
        return IntakeSMTP(
            self.handler,
            # Given, so aiosmtpd does not look the loop up (with warnings caught) per connection.
            loop=asyncio.get_running_loop(),
            connections=self.connections,
            max_per_client=self.max_per_client,
            trusted_proxies=self.trusted_proxies,
            proxy_protocol_timeout=PROXY_TIMEOUT_SECONDS if self.trusted_proxies else None,
            data_size_limit=self.max_bytes,
            enable_SMTPUTF8=True,
            hostname=HOSTNAME,
            ident="inboxlog ESMTP",
            timeout=self.idle_timeout,
            tls_context=self.tls_context,
            require_starttls=False,
            decode_data=False,
        )

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._factory, host=self.host, port=self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("SMTP gateway listening on %s:%s", self.host, self.port)
        return self.port

    async def drain_and_stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let open transactions (MAIL through end of DATA) finish, then close."""
        if self.server is None:
            return
        self.server.close()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.handler.transactions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        log.info(
            "SMTP gateway stopped (transactions open at close: %s)", len(self.handler.transactions)
        )

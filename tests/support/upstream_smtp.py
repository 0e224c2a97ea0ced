"""A scriptable upstream SMTP server on loopback: what inboxlog's outbound delivery talks to.

One job: stand in for a mail provider's submission server (Gmail, Microsoft 365, a company's
Postfix) in tests. aiosmtpd on 127.0.0.1 and an ephemeral port, in its own event-loop thread;
optional STARTTLS or implicit TLS with a throw-away CA (``ca_file``) and a certificate for
``localhost``/127.0.0.1; optional AUTH — PLAIN/LOGIN against ``passwords``, XOAUTH2 and
OAUTHBEARER against ``tokens`` or a ``token_check`` callback, refusing a bad token the way Gmail
does (a 334 error challenge, then 535).

Scripting: :meth:`UpstreamSmtp.script` queues replies per stage; each command of that stage
takes the next one, and an empty queue means the normal answer. So
``script(data=["451 4.3.0 Try later"] * 2)`` makes the next two DATA fail and the third pass,
and ``script(rcpt=[None, "550 5.1.1 No such user"])`` refuses only the second RCPT. A reply may
be multi-line (``"451-4.3.0 one\\r\\n451 4.3.0 two"``), or :data:`DROP` (close the connection
instead of answering) or :data:`HANG` (never answer). :meth:`script_recipient` does the same per
address. A ``greeting`` that is not ``220 ...`` (``"421 4.3.2 Busy"``, ``"* OK IMAP4rev1"``) is
sent by a bare protocol instead of SMTP.

Records: every message the server answered 250 to (:attr:`deliveries`: envelope, bytes, the
AUTH identity, TLS or not), every command verb with its connection and TLS state
(:attr:`commands`; never arguments, which carry secrets), the number of connections accepted.
All of it is safe to read from the test thread; waiting uses a condition, never a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)

from tests.support.dovecot import _write_tls_material

HOST = "127.0.0.1"
DROP = "<drop>"  # close the connection instead of answering
HANG = "<hang>"  # never answer: the client's timeout fires
STAGES = ("greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data")
BAD_TOKEN = "535 5.7.8 Username and Password not accepted"


@dataclass(frozen=True)
class Identity:
    mechanism: str  # PLAIN | LOGIN | XOAUTH2 | OAUTHBEARER
    user: str


@dataclass(frozen=True)
class Delivery:
    """A message the server answered 250 to at the end of DATA."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as received, dot-stuffing undone, CRLF line ends
    mail_options: tuple[str, ...]
    auth: Identity | None
    tls: bool
    helo: str | None
    connection: int


@dataclass(frozen=True)
class Command:
    connection: int  # 1 for the first connection accepted, and so on
    verb: str  # EHLO, STARTTLS, AUTH, MAIL ...; never the arguments
    tls: bool


class UpstreamSmtp:
    """Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        tls: str = "none",  # none | starttls | ssl (implicit TLS)
        passwords: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        token_check: Callable[[str, str], bool] | None = None,
        require_auth: bool = False,
        # Every connection's greeting unless scripted; one starting "220" is aiosmtpd's own.
        greeting: str | None = None,
        smtputf8: bool = True,
        size_limit: int | None = 50 * 1024 * 1024,
        hostname: str = "upstream.test",
    ) -> None:
        if tls not in ("none", "starttls", "ssl"):
            raise ValueError("tls must be none, starttls or ssl")
        self.tls = tls
        self.passwords = dict(passwords or {})
        known = dict(tokens or {})
        self._token_check = token_check or (lambda user, token: known.get(user) == token)
        self._oauth = token_check is not None or bool(tokens)
        self.require_auth, self.greeting = require_auth, greeting
        self.smtputf8, self.size_limit, self.hostname = smtputf8, size_limit, hostname
        self.host, self.port = HOST, 0
        self.ca_file: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ssl: ssl.SSLContext | None = None

        self._lock = threading.Condition()
        self._scripts: dict[str, deque[str | None]] = {stage: deque() for stage in STAGES}
        self._per_rcpt: dict[str, deque[str | None]] = {}
        self._deliveries: list[Delivery] = []
        self._commands: list[Command] = []
        self._connections = 0
        self._errors: list[str] = []

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    # --- scripting and records (any thread) ---------------------------------------------

    def script(
        self,
        *,
        greeting: Iterable[str | None] = (),
        ehlo: Iterable[str | None] = (),
        starttls: Iterable[str | None] = (),
        auth: Iterable[str | None] = (),
        mail: Iterable[str | None] = (),
        rcpt: Iterable[str | None] = (),
        data: Iterable[str | None] = (),
    ) -> None:
        """Queue replies per stage (``None``: the normal answer for that turn)."""
        given = dict(zip(STAGES, (greeting, ehlo, starttls, auth, mail, rcpt, data), strict=True))
        with self._lock:
            for stage, replies in given.items():
                self._scripts[stage].extend(replies)

    def script_recipient(self, address: str, replies: Iterable[str | None]) -> None:
        """Queue RCPT replies for one address (case-insensitive); consulted before ``rcpt``."""
        with self._lock:
            self._per_rcpt.setdefault(address.lower(), deque()).extend(replies)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def commands(self) -> list[Command]:
        with self._lock:
            return list(self._commands)

    @property
    def errors(self) -> list[str]:
        """Exceptions inside the helper's sessions (should stay empty)."""
        with self._lock:
            return list(self._errors)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def wait_for_deliveries(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self._deliveries)} deliveries, expected {count}")
            return list(self._deliveries)

    def _next(self, stage: str, address: str | None = None) -> str | None:
        with self._lock:
            if address is not None:
                own = self._per_rcpt.get(address.lower())
                if own:
                    return own.popleft()
            queue = self._scripts[stage]
            return queue.popleft() if queue else None

    def _record_command(self, connection: int, verb: str, tls: bool) -> None:
        with self._lock:
            self._commands.append(Command(connection, verb, tls))

    def _record_error(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(f"{type(error).__name__}: {error}")

    def _record_delivery(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)
            self._lock.notify_all()

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> UpstreamSmtp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> UpstreamSmtp:
        if self.tls != "none":
            self._tmp = tempfile.TemporaryDirectory(prefix="ilog-upstream-")
            ca, cert, key = _write_tls_material(Path(self._tmp.name))
            self.ca_file = str(ca)
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(cert, key)
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="upstream-smtp", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)  # sessions cut by stop(): let them unwind
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    async def _serve(self) -> int:
        assert self._loop is not None
        self._server = await self._loop.create_server(
            self._factory, host=HOST, port=0, ssl=self._ssl if self.tls == "ssl" else None
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for transport in list(self._transports):
            _abort(transport)
        await self._server.wait_closed()

    def _factory(self) -> asyncio.BaseProtocol:
        with self._lock:
            self._connections += 1
            number = self._connections
        greeting = self._next("greeting") or self.greeting
        if greeting is not None and not greeting.startswith("220"):
            return _Banner(self, greeting)
        return _UpstreamSMTP(self, number)

    def _opened(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)

    def _closed(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._transports.discard(transport)

    def _smtp_kwargs(self) -> dict[str, Any]:
        mechanisms = {"PLAIN", "LOGIN"} if self.passwords else set()
        if self._oauth:
            mechanisms |= {"XOAUTH2", "OAUTHBEARER"}
        return dict(
            hostname=self.hostname,
            ident="upstream ESMTP",
            enable_SMTPUTF8=self.smtputf8,
            data_size_limit=self.size_limit,
            decode_data=False,
            tls_context=self._ssl if self.tls == "starttls" else None,
            # STARTTLS servers offer AUTH only inside TLS (as real ones do); implicit TLS is
            # TLS from the first byte (aiosmtpd cannot tell), and plain servers take it in clear.
            auth_require_tls=self.tls == "starttls",
            auth_required=self.require_auth,
            auth_exclude_mechanism=[
                m for m in ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER") if m not in mechanisms
            ],
            authenticator=self._check_password,
            loop=self._loop,
        )

    def _check_password(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        user, password = data.login.decode(), data.password.decode()
        if self.passwords.get(user) == password:
            return AuthResult(success=True, auth_data=Identity(mechanism, user))
        return AuthResult(success=False, handled=False)


class _Handler:
    """aiosmtpd handler hooks: scripted replies first, then the normal answer.

    aiosmtpd treats every ``handle_*`` method as a command hook and every ``auth_*`` method as
    a SASL mechanism: nothing else here may start with those prefixes.
    """

    def __init__(self, upstream: UpstreamSmtp, connection: int) -> None:
        self.up, self.connection = upstream, connection

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler with an EHLO hook
        scripted = self.up._next("ehlo")
        if scripted is not None:
            await _act(server, scripted)
            return [scripted]
        if not (self.up.passwords or self.up._oauth):  # aiosmtpd would offer "AUTH" with none
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        return responses

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        scripted = self.up._next("auth")
        if scripted is None:
            return MISSING  # aiosmtpd goes on with the mechanism
        await _act(server, scripted)
        return scripted

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self.up._next("mail")
        if scripted is not None:
            await _act(server, scripted)
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self.up._next("rcpt", address)
        if scripted is not None:
            await _act(server, scripted)
            if not scripted.startswith("2"):
                return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return scripted or "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        scripted = self.up._next("data")
        if scripted is not None:
            await _act(server, scripted)
            if not scripted.startswith("250"):
                return scripted
        identity = session.auth_data if isinstance(session.auth_data, Identity) else None
        self.up._record_delivery(
            Delivery(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.original_content or b"",
                mail_options=tuple(envelope.mail_options),
                auth=identity,
                tls=_tls(server),
                helo=session.host_name,
                connection=self.connection,
            )
        )
        return scripted or f"250 2.0.0 Ok: queued as {len(self.up.deliveries)}"

    async def handle_exception(self, error: Exception) -> str:
        # A TLS handshake the client broke off is a normal event here (tests of refused
        # certificates); anything else is a bug in this helper, kept for the test to see.
        if not isinstance(error, TLSSetupException):
            self.up._record_error(error)
        return "451 4.3.0 Upstream helper error"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        fields = await _sasl_fields(server, args)
        if fields is None:
            return AuthResult(success=False, handled=True)
        pairs = dict(f.split("=", 1) for f in fields.split("\x01") if "=" in f)
        return await self._bearer(server, "XOAUTH2", pairs.get("user", ""), pairs.get("auth", ""))

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        fields = await _sasl_fields(server, args)
        if fields is None:
            return AuthResult(success=False, handled=True)
        gs2, _, rest = fields.partition("\x01")
        user = ""
        for part in gs2.split(","):
            if part.startswith("a="):
                user = part[2:].replace("=2C", ",").replace("=3D", "=")
        pairs = dict(f.split("=", 1) for f in rest.split("\x01") if "=" in f)
        return await self._bearer(server, "OAUTHBEARER", user, pairs.get("auth", ""))

    async def _bearer(self, server: SMTP, mechanism: str, user: str, auth: str) -> AuthResult:
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if user and token and self.up._token_check(user, token):
            return AuthResult(success=True, auth_data=Identity(mechanism, user))
        # Gmail: a 334 challenge carrying an error document; the client answers it (empty
        # line, or \x01 for OAUTHBEARER) and only then gets the final 535.
        error = json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail"})
        answer = await server.challenge_auth(error)
        if not isinstance(answer, bytes):  # the client aborted (*) or sent bad base64
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=BAD_TOKEN)


async def _sasl_fields(server: SMTP, args: list[str]) -> str | None:
    """The client's first SASL message: the initial response, or the answer to an empty 334."""
    if len(args) > 1:
        try:
            return base64.b64decode(args[1], validate=True).decode("utf-8", "replace")
        except ValueError:
            await server.push("501 5.5.2 Can't decode base64")
            return None
    answer = await server.challenge_auth("")
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else None


async def _act(server: SMTP, scripted: str) -> None:
    """DROP and HANG: never return (the session ends with the connection)."""
    if scripted == DROP:
        assert server.transport is not None
        _abort(server.transport)
        await asyncio.get_running_loop().create_future()
    if scripted == HANG:
        await asyncio.get_running_loop().create_future()


def _abort(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.Transport):
        transport.abort()  # no FIN handshake: the client sees a reset or EOF at once
    else:
        transport.close()


def _tls(server: SMTP) -> bool:
    return (
        server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
    )


class _UpstreamSMTP(SMTP):
    """aiosmtpd's SMTP with scripted STARTTLS replies and a record of every command verb."""

    def __init__(self, upstream: UpstreamSmtp, connection: int) -> None:
        self.up, self.connection = upstream, connection
        super().__init__(_Handler(upstream, connection), **upstream._smtp_kwargs())
        self._smtp_methods = {
            verb: self._recorded(verb, method) for verb, method in self._smtp_methods.items()
        }
        self._raw_transport: asyncio.BaseTransport | None = None

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def _recorded(self, verb: str, method: Callable[[str], Any]) -> Callable[[str], Any]:
        async def run(arg: str) -> None:
            self.up._record_command(self.connection, verb, _tls(self))
            await method(arg)

        return run

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw_transport is None:  # again after STARTTLS, with the TLS transport
            self._raw_transport = transport
            self.up._opened(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.up._closed(self._raw_transport)
        super().connection_lost(error)

    async def smtp_STARTTLS(self, arg: str) -> None:
        scripted = self.up._next("starttls")
        if scripted is None:
            await super().smtp_STARTTLS(arg)
            return
        await _act(self, scripted)
        await self.push(scripted)


class _QuietSession(Session):
    # aiosmtpd 1.4 sets Session.login_data after every AUTH, and the property warns that it
    # is deprecated; a plain attribute takes the assignment quietly.
    login_data = None


class _Banner(asyncio.Protocol):
    """A server that does not greet with 220: a refusal (421 closes at once, 554 answers 503
    until QUIT, as RFC 5321 3.1 says) or something that is not SMTP at all."""

    def __init__(self, upstream: UpstreamSmtp, greeting: str) -> None:
        self.up, self.greeting = upstream, greeting
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.up._opened(transport)
        transport.write(self.greeting.encode("utf-8") + b"\r\n")
        if self.greeting.startswith("421"):
            transport.close()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            if line.strip().upper() == b"QUIT":
                self.transport.write(b"221 2.0.0 Bye\r\n")
                self.transport.close()
                return
            self.transport.write(b"503 5.5.1 No service here\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.up._closed(self.transport)


@contextlib.contextmanager
def upstream_smtp(**kwargs: Any) -> Iterator[UpstreamSmtp]:
    """``with upstream_smtp(tls="starttls", passwords={...}) as server: ...``"""
    with UpstreamSmtp(**kwargs) as server:
        yield server

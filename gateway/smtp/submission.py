"""The SMTP submission listener (§9): a user's mail client, or an on-premise MTA, sends through
inboxlog with the user's email and an API token; accepted mail takes the send route's path
(stored as a queued outbox entry, then delivered by a worker).

Only over TLS: after STARTTLS on ``INBOXLOG_SUBMISSION_PORT`` (every command but
EHLO/HELO/STARTTLS/QUIT/NOOP waits for it), or from the first byte on
``INBOXLOG_SUBMISSION_TLS_PORT`` (implicit TLS, port 465 style). MAIL waits for AUTH.
Neither the token nor the message ever reaches a log line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import sqlalchemy as sa
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.orm import Session, sessionmaker

from gateway.smtp import replies
from gateway.smtp.app import tls_context
from gateway.smtp.handler import IntakeHandler, client_of
from gateway.smtp.hooks import NamedHooks
from gateway.smtp.server import HOSTNAME, IntakeSMTP
from shared.config import ConfigError, Settings
from shared.crypto import hash_token
from shared.db.engine import transaction
from shared.db.models import ApiToken, User
from shared.errors import DomainError, Forbidden, Invalid
from shared.mail.addresses import normalize_address
from shared.principal import Principal
from shared.services.outbound import sender_connection, submit_raw

log = logging.getLogger("inboxlog.submission")

OK_MAIL = "250 2.1.0 Sender OK"
OK_RCPT = "250 2.1.5 Recipient OK"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure, please retry later"
AUTH_REVOKED = "550 5.7.8 Authentication credentials no longer valid"
BAD_ADDRESS = "553 5.1.3 Malformed address"
NO_SMTP = "550 5.7.1 This address has no SMTP server set up in inboxlog"
UNSTORABLE = "554 5.6.0 The message holds text that cannot be stored"
# RFC 5322 allows no NUL, nor does 8BITMIME (BINARYMIME is not offered); PostgreSQL's text
# columns (the subject) could not store one either.
NUL_REFUSED = "554 5.6.0 NUL characters are not allowed in a message"
# Every later reply is our own words: a DomainError's message, made a safe reply line.
REPLY_TEXT_MAX = 200


class DeliveryQueue(Protocol):
    """Where accepted mail is handed to the workers (shared.queueing.TaskSender)."""

    def deliver(self, outbox_ids: Iterable[int]) -> int: ...


@dataclass(frozen=True)
class Login:
    """Who authenticated: their email and the digest of the token they used (never the token).
    Checked again at MAIL and DATA, so a revoked token or deactivated user stops there."""

    email: str
    token_hash: str


def user_principal(session: Session, login: Login) -> Principal | None:
    """The user whose token this is, when active and named by ``login.email``."""
    user = session.execute(
        sa.select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == login.token_hash)
    ).scalar_one_or_none()
    if user is None or not user.active or user.email != login.email:
        return None
    return Principal(kind="user", account_id=user.account_id, user_id=user.id, role=user.role)


def plausible_address(address: str) -> bool:
    """``local@domain`` without spaces or control characters (they never reach the database)."""
    local, at, domain = address.rpartition("@")
    return bool(local and at and domain) and not any(c <= " " or c == "\x7f" for c in address)


def reply(code: str, text: str) -> str:
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)[:REPLY_TEXT_MAX]
    return f"{code} {clean}"


def refusal(exc: DomainError) -> str:
    """The reply for what the domain refused at the end of DATA."""
    if exc.code == "auth_revoked":
        return AUTH_REVOKED
    if isinstance(exc, Forbidden):
        return reply("550 5.7.1", exc.message)
    if exc.code == "too_large":
        return replies.TOO_BIG
    return reply("554 5.6.0", exc.message)


def login_of(session: SmtpSession) -> Login:
    login = session.auth_data  # set by SubmissionSMTP._verified; MAIL waits for AUTH
    assert isinstance(login, Login)
    return login


class SubmissionHandler(NamedHooks):
    """aiosmtpd hooks of the submission listener. Database work runs in worker threads."""

    hook_prefixes = ("handle_", "auth_")  # what aiosmtpd looks up (gateway/smtp/hooks.py)

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        queue: DeliveryQueue | None,
        max_recipients: int,
        max_bytes: int,
    ) -> None:
        self.sessions, self.queue = sessions, queue
        self.max_recipients, self.max_bytes = max_recipients, max_bytes
        # Sessions between MAIL and the end of DATA: a graceful shutdown waits for them.
        self.transactions: set[int] = set()

    # -- AUTH (called from SubmissionSMTP) --------------------------------------------------
    def authenticate(self, login: bytes, password: bytes) -> Login | None:
        """The login when ``password`` is an API token of the active user whose email is
        ``login`` (case-insensitive); else None."""
        try:
            email, token = normalize_address(login.decode()), password.decode()
        except UnicodeDecodeError:
            return None
        if not email or not token:
            return None
        found = Login(email, hash_token(token))
        with self.sessions() as session:
            return found if user_principal(session, found) is not None else None

    # -- hooks --------------------------------------------------------------------------------
    async def handle_MAIL(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not plausible_address(address):
            return BAD_ADDRESS
        try:
            status = await asyncio.to_thread(self._may_send_from, login_of(session), address)
        except Exception as exc:
            log.warning("sender check failed: %s", type(exc).__name__)
            return replies.STORAGE_UNAVAILABLE
        if status == OK_MAIL:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            self.transactions.add(id(session))
        return status

    def _may_send_from(self, login: Login, address: str) -> str:
        with self.sessions() as session:
            principal = user_principal(session, login)
            if principal is None:
                return AUTH_REVOKED
            try:
                sender_connection(session=session, principal=principal, address=address)
            except Forbidden:
                return reply("550 5.7.1", "You may not send from this address")
            except Invalid:  # no_smtp: nothing to deliver through
                return NO_SMTP
        return OK_MAIL

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        if not plausible_address(address):
            return BAD_ADDRESS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return OK_RCPT

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        assert envelope.mail_from is not None  # aiosmtpd: DATA needs MAIL and RCPT first
        if b"\x00" in raw:
            return NUL_REFUSED
        try:
            outbox_id = await asyncio.to_thread(
                self._store, login_of(session), envelope.mail_from, list(envelope.rcpt_tos), raw
            )
        except DomainError as exc:
            return refusal(exc)
        except sa.exc.DataError:  # text a column refuses: sending again would not help
            return UNSTORABLE
        except Exception as exc:  # the database is down (or a bug): the client keeps the mail
            log.warning("submission not stored: %s", type(exc).__name__)
            return replies.STORAGE_UNAVAILABLE
        await self._enqueue(outbox_id)
        log.info("submitted outbox=%s size=%s client=%s", outbox_id, len(raw), client_of(session))
        return f"250 2.0.0 queued as {outbox_id}"

    def _store(self, login: Login, mail_from: str, rcpt_tos: list[str], raw: bytes) -> int:
        """One transaction, committed before the task that delivers it can look for it."""
        with transaction(self.sessions) as session:
            principal = user_principal(session, login)
            if principal is None:
                raise Forbidden("authentication no longer valid", code="auth_revoked")
            outbox = submit_raw(
                session=session,
                principal=principal,
                max_bytes=self.max_bytes,
                mail_from=mail_from,
                rcpt_tos=rcpt_tos,
                raw=raw,
            )
            outbox_id = outbox.id
        return outbox_id

    async def _enqueue(self, outbox_id: int) -> None:
        """After the commit; a broker outage leaves the entry to the outbox sweeper, and the
        client still gets its 250 (the mail is stored: refusing now would make it resend)."""
        if self.queue is None:
            return
        try:
            await asyncio.to_thread(self.queue.deliver, [outbox_id])
        except Exception as exc:
            log.warning("delivery enqueue deferred to the sweeper: %s", type(exc).__name__)

    async def handle_RSET(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        self.transactions.discard(id(session))
        return "250 2.0.0 OK"

    async def handle_exception(self, error: Exception) -> str:
        """Any other failure inside a hook: never the exception's words, and transient."""
        log.error("submission session failed: %s", type(error).__name__)
        return replies.INTERNAL_ERROR


def _credentials_read(
    server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    """aiosmtpd's authenticator runs on the event loop, so it only hands over the decoded
    credentials; SubmissionSMTP._verified checks them against the database in a thread."""
    return AuthResult(success=True, auth_data=data)


class _TlsThroughout(logging.Filter):
    """aiosmtpd logs that AUTH goes without TLS whenever ``auth_require_tls`` is off — which
    only the implicit-TLS listener does, where the socket is TLS from the first byte."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "auth_require_tls == False" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_TlsThroughout())


class SubmissionSMTP(IntakeSMTP):
    """The intake gateway's protocol (enhanced replies, per-client connection bound, slow DATA
    allowed, idle timeout) with STARTTLS required and AUTH PLAIN/LOGIN checked by the handler."""

    def __init__(self, handler: SubmissionHandler, *, implicit_tls: bool, **kwargs: Any) -> None:
        # IntakeSMTP only passes its handler on to aiosmtpd and reads ``transactions``, which
        # SubmissionHandler has too; its annotation names the intake handler alone.
        # On implicit TLS the socket is TLS before the greeting: aiosmtpd must not offer or
        # require STARTTLS there (it knows TLS only from STARTTLS).
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": on implicit TLS it is TLS throughout.
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(
                cast(IntakeHandler, handler),
                authenticator=_credentials_read,
                auth_required=True,
                auth_require_tls=not implicit_tls,
                require_starttls=not implicit_tls,
                **kwargs,
            )
        self.submission = handler

    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: SMTP, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(_, args))

    async def _verified(self, parsed: AuthResult) -> AuthResult:
        """``parsed``: aiosmtpd's reading of the exchange (a failure already answered)."""
        if not parsed.success:
            return parsed
        creds = parsed.auth_data
        assert isinstance(creds, LoginPassword)
        try:
            login = await asyncio.to_thread(
                self.submission.authenticate, creds.login, creds.password
            )
        except Exception as exc:
            log.warning("authentication check failed: %s", type(exc).__name__)
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if login is None:
            assert self.session is not None
            log.info("authentication refused (client %s)", client_of(self.session))
            return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8
        return AuthResult(success=True, auth_data=login)

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await super().smtp_DATA(arg)
        finally:  # also after a refused DATA (too big, no recipients): the transaction is over
            self.submission.transactions.discard(id(self.session))


class SubmissionServer:
    def __init__(
        self,
        handler: SubmissionHandler,
        *,
        host: str,
        port: int,
        tls: ssl.SSLContext,
        max_message_bytes: int,
        idle_timeout: float,
        max_connections_per_client: int,
        implicit_tls: bool = False,
    ) -> None:
        """``implicit_tls``: TLS from the first byte (port 465 style) instead of STARTTLS."""
        self.handler, self.host, self.port, self.tls = handler, host, port, tls
        self.implicit_tls = implicit_tls
        self.max_bytes, self.idle_timeout = max_message_bytes, idle_timeout
        self.max_per_client = max_connections_per_client
        self.connections: Counter[str | None] = Counter()
        self.server: asyncio.Server | None = None

    def _factory(self) -> SubmissionSMTP:
        return SubmissionSMTP(
            self.handler,
            loop=asyncio.get_running_loop(),  # not looked up per connection (server.py)
            connections=self.connections,
            max_per_client=self.max_per_client,
            data_size_limit=self.max_bytes,
            enable_SMTPUTF8=True,
            hostname=HOSTNAME,
            ident="inboxlog ESMTP submission",
            timeout=self.idle_timeout,
            tls_context=None if self.implicit_tls else self.tls,
            implicit_tls=self.implicit_tls,
            decode_data=False,
        )

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._factory,
            host=self.host,
            port=self.port,
            ssl=self.tls if self.implicit_tls else None,
            ssl_handshake_timeout=self.idle_timeout if self.implicit_tls else None,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        how = "implicit TLS" if self.implicit_tls else "STARTTLS"
        log.info("SMTP submission (%s) listening on %s:%s", how, self.host, self.port)
        return self.port

    async def drain_and_stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let open transactions (MAIL through end of DATA) finish."""
        if self.server is None:
            return
        self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.handler.transactions and loop.time() < deadline:
            await asyncio.sleep(0.05)
        log.info(
            "SMTP submission stopped (transactions open at close: %s)",
            len(self.handler.transactions),
        )


def build_submission(
    settings: Settings,
    sessions: sessionmaker[Session],
    queue: DeliveryQueue | None,
    *,
    port: int | None = None,
    implicit_tls: bool = False,
) -> SubmissionServer:
    """The listener on ``settings.smtp_host:submission_port`` — or, with ``implicit_tls``,
    ``submission_tls_port`` (``port`` overrides, 0 for an ephemeral one); ConfigError without
    a port or a certificate: credentials never go in the clear."""
    variable = "INBOXLOG_SUBMISSION_TLS_PORT" if implicit_tls else "INBOXLOG_SUBMISSION_PORT"
    if port is None:
        port = settings.submission_tls_port if implicit_tls else settings.submission_port
    if port is None:
        raise ConfigError(f"{variable} is not set")
    tls = tls_context(settings)
    if tls is None:
        raise ConfigError(
            f"{variable} needs INBOXLOG_SMTP_TLS_CERT (and INBOXLOG_SMTP_TLS_KEY): "
            "the submission listener takes passwords only over TLS"
        )
    handler = SubmissionHandler(
        sessions=sessions,
        queue=queue,
        max_recipients=settings.smtp_max_recipients,
        max_bytes=settings.max_message_bytes,
    )
    return SubmissionServer(
        handler,
        host=settings.smtp_host,
        port=port,
        tls=tls,
        max_message_bytes=settings.max_message_bytes,
        idle_timeout=settings.smtp_idle_timeout,
        max_connections_per_client=settings.smtp_max_connections_per_client,
        implicit_tls=implicit_tls,
    )

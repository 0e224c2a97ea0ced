"""Delivering built messages to a connection's upstream SMTP server (§9 Delivery).

One job: open a session to the server the connection names, secure it as configured, sign in,
and run mail transactions (one, or several over the same session) — then say exactly what
happened: :class:`Accepted` (with the
recipients the server refused or deferred), or :class:`DeliveryError` (temporary or permanent,
with the outbox's ``last_error``; see :mod:`shared.outbound.smtp_errors`).

Network safety (§6): the TCP connection goes only to addresses :mod:`shared.netsafety` vetted
at this connect. smtplib gets its socket from one hook, ``_get_socket(host, port, timeout)``
(the one its own ``SMTP_SSL`` overrides); we subclass ``SMTP`` and ``SMTP_SSL`` to override that
hook only — greeting, EHLO, STARTTLS, AUTH and the transaction stay smtplib's code, and nothing
global is patched. TLS (implicit or STARTTLS) verifies the certificate against the host *name*
the user configured, never the IP we dialled; ``starttls`` that is not offered or is refused is
an error, never a plaintext session. Passwords go out only inside TLS unless ``none`` was
chosen explicitly.

Nothing here logs, and smtplib's debug output stays off: no secret and no message body can
reach a log.
"""

from __future__ import annotations

import contextlib
import functools
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.netsafety import (
    NOT_ALLOWED_SENTENCE,
    NOT_FOUND_SENTENCE,
    HostNotAllowed,
    HostNotFound,
    Resolver,
    create_connection,
)
from shared.networks import Networks
from shared.outbound.smtp_errors import (
    DeliveryError,
    Reply,
    bad_greeting,
    lost,
    ours,
    parse_reply,
    protocol_error,
    refused_by_server,
    timed_out,
    timeout_error,
)

if TYPE_CHECKING:
    from smtplib import _AuthObject  # typeshed's protocol of smtplib's SASL responders

__all__ = [
    "Accepted",
    "DeliveryError",
    "Reply",
    "SmtpSession",
    "SmtpSettings",
    "send_message",
    "smtp_session",
]

SECURITY_MODES = ("ssl", "starttls", "none")
QUIT_TIMEOUT = 10.0  # the message is already decided; a slow QUIT must not hold the worker

Dial = Callable[[str, int, float], socket.socket]


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str | None  # None: no AUTH
    secret: str | None = field(repr=False)  # the password, or the OAuth access token
    auth: str = "password"  # password | oauth
    sasl: str = "xoauth2"  # with oauth: xoauth2 | oauthbearer


@dataclass(frozen=True)
class Accepted:
    """The server took the message (250 to DATA) for ``recipients``.

    ``refused``: recipients it refused for good (5xx to RCPT) — their copy failed.
    ``deferred``: recipients it refused for now (4xx to RCPT) — retry just those.
    """

    recipients: tuple[str, ...]
    refused: Mapping[str, Reply]
    deferred: Mapping[str, Reply]
    reply: Reply


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


class _VettedSMTP(smtplib.SMTP):
    """smtplib's SMTP with its socket from ``dial``. STARTTLS later wraps that socket with
    ``server_hostname`` = the host name given here (smtplib keeps it), so the certificate is
    checked against the name, not the address."""

    def __init__(
        self, host: str, port: int, *, dial: Dial, timeout: float, local_hostname: str | None
    ) -> None:
        self._dial = dial  # before smtplib's __init__, which connects
        super().__init__(host, port, local_hostname=local_hostname, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self._dial(host, port, timeout)


class _VettedSMTPSSL(smtplib.SMTP_SSL):
    """smtplib's implicit-TLS SMTP with its socket from ``dial``, wrapped as smtplib does it:
    SNI and certificate verification against the host name."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        dial: Dial,
        context: ssl.SSLContext,
        timeout: float,
        local_hostname: str | None,
    ) -> None:
        self._dial, self._server_name = dial, host
        super().__init__(
            host, port, local_hostname=local_hostname, timeout=timeout, context=context
        )

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = self._dial(host, port, timeout)
        try:
            return self.context.wrap_socket(sock, server_hostname=self._server_name)
        except BaseException:
            sock.close()
            raise


def send_message(
    settings: SmtpSettings,
    *,
    mail_from: str,
    recipients: Sequence[str],
    data: bytes,
    allowed: Networks,
    ca_file: str | None = None,
    resolver: Resolver = socket.getaddrinfo,
    timeout: float = 60.0,
    local_hostname: str | None = None,
) -> Accepted:
    """Deliver ``data`` (the built message) from ``mail_from`` to ``recipients`` through the
    server ``settings`` names — one session, one transaction (:func:`smtp_session` says more).

    Returns :class:`Accepted` when the server took the message for at least one recipient;
    raises :class:`DeliveryError` when no recipient has it, and ``ValueError`` for arguments
    that could never be sent (no recipient, an address with control characters, ...).
    """
    rcpts = _recipients(recipients)
    _check_address(mail_from, allow_empty=True)
    with smtp_session(
        settings,
        allowed=allowed,
        ca_file=ca_file,
        resolver=resolver,
        timeout=timeout,
        local_hostname=local_hostname,
    ) as session:
        return session.send(mail_from, rcpts, data)


@contextlib.contextmanager
def smtp_session(
    settings: SmtpSettings,
    *,
    allowed: Networks,
    ca_file: str | None = None,
    resolver: Resolver = socket.getaddrinfo,
    timeout: float = 60.0,
    local_hostname: str | None = None,
) -> Iterator[SmtpSession]:
    """A session to the server ``settings`` names, greeted, secured and signed in, for one
    or more mail transactions (:meth:`SmtpSession.send`); QUIT when it ends in step with the
    server. ``allowed``: the private networks the operator allows (required: forgetting it
    must refuse private servers, not reach them). ``timeout`` bounds the connect and each
    wait for a reply. ``local_hostname``: the EHLO name (default: this machine's FQDN, else
    its address literal — smtplib's rule, looked up once per process).

    A failure to open the session raises :class:`DeliveryError` on entry.
    """
    _check_settings(settings)
    ctx = tls_context(ca_file) if settings.security in ("ssl", "starttls") else None
    ehlo_name = local_hostname or _default_ehlo_name()
    smtp = _connect(settings, ctx, allowed, resolver, timeout, ehlo_name)
    session = _Session(smtp, timeout)
    polite = True
    try:
        try:
            session.hello()
            if settings.security == "starttls":
                assert ctx is not None
                session.starttls(ctx)
            if settings.username is not None:
                session.authenticate(settings)
        except (smtplib.SMTPException, OSError) as exc:
            raise lost(exc, session.stage) from None
        yield SmtpSession(session)
    except DeliveryError as exc:
        polite = session.in_step(exc)
        raise
    finally:
        session.finish(polite=polite)


class SmtpSession:
    """Mail transactions over one open session."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._open_transaction = False  # a refused transaction must be reset before the next

    def send(self, mail_from: str, recipients: Sequence[str], data: bytes) -> Accepted:
        """One transaction: :class:`Accepted`, or :class:`DeliveryError` when no recipient
        has the message. After an error for which :meth:`usable` is true, the session may
        carry the next message."""
        rcpts = _recipients(recipients)
        _check_address(mail_from, allow_empty=True)
        session = self._session
        try:
            if self._open_transaction:
                session.stage = "rset"
                code, message = session.smtp.rset()
                session.expect_2xx(code, message)
            self._open_transaction = True
            accepted = session.transaction(mail_from, rcpts, _crlf(data))
        except (smtplib.SMTPException, OSError) as exc:
            raise lost(exc, session.stage) from None
        self._open_transaction = False
        return accepted

    def usable(self, exc: DeliveryError) -> bool:
        """Whether the session still carries mail after ``exc``: we are in step with the
        server (it answered, and not with 421, which closes; or we stopped between commands)."""
        return self._session.in_step(exc)


# --- arguments -----------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_settings(s: SmtpSettings) -> None:
    if s.security not in SECURITY_MODES:
        raise ValueError(f"security must be one of {SECURITY_MODES}")
    if s.auth not in ("password", "oauth"):
        raise ValueError("auth must be 'password' or 'oauth'")
    if s.auth == "oauth" and s.sasl not in ("xoauth2", "oauthbearer"):
        raise ValueError("sasl must be 'xoauth2' or 'oauthbearer'")
    if s.username is not None and s.secret is None:
        raise ValueError("a username needs a secret (password or access token)")


def _check_address(address: str, *, allow_empty: bool = False) -> None:
    if not address and not allow_empty:
        raise ValueError("empty address")
    if _CONTROL.search(address) or "<" in address or ">" in address:
        raise ValueError("an address may not hold control characters or angle brackets")


def _recipients(recipients: Sequence[str]) -> tuple[str, ...]:
    if isinstance(recipients, str):
        raise ValueError("recipients must be a sequence of addresses, not one string")
    out = tuple(dict.fromkeys(recipients))  # each once, in order: one RCPT, one verdict
    if not out:
        raise ValueError("no recipient")
    for rcpt in out:
        _check_address(rcpt)
    return out


def _crlf(data: bytes) -> bytes:
    """Every line ending as CRLF: RFC 5321 forbids bare CR and LF, and servers refuse them
    (SMTP smuggling defences). smtplib does the dot-stuffing."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


# --- connecting ----------------------------------------------------------------------------


@functools.cache
def _default_ehlo_name() -> str:
    """smtplib's default EHLO name, computed once: left to smtplib, it would be looked up
    (a reverse DNS query, outside our timeout) before every message."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"


def _connect(
    s: SmtpSettings,
    ctx: ssl.SSLContext | None,
    allowed: Networks,
    resolver: Resolver,
    timeout: float,
    local_hostname: str,
) -> smtplib.SMTP:
    """A session the server greeted with 220; before that, failures are told in our words."""

    def dial(host: str, port: int, dial_timeout: float) -> socket.socket:
        return create_connection(host, port, allowed, timeout=dial_timeout, resolver=resolver)

    try:
        if s.security == "ssl":
            assert ctx is not None
            return _VettedSMTPSSL(
                s.host,
                s.port,
                dial=dial,
                context=ctx,
                timeout=timeout,
                local_hostname=local_hostname,
            )
        return _VettedSMTP(
            s.host, s.port, dial=dial, timeout=timeout, local_hostname=local_hostname
        )
    except HostNotAllowed:
        # The saved name now resolves only to addresses we may not dial: waiting will not
        # change that, and the sender must see it (settings or the allowed networks).
        raise ours(
            "host_not_allowed", NOT_ALLOWED_SENTENCE, temporary=False, stage="connect"
        ) from None
    except HostNotFound:
        # The name was checked when saved; DNS failing now is most often passing trouble.
        raise ours("host_not_found", NOT_FOUND_SENTENCE, temporary=True, stage="connect") from None
    except smtplib.SMTPConnectError as exc:
        raise bad_greeting(exc.smtp_code) from None
    except smtplib.SMTPServerDisconnected as exc:
        if timed_out(exc):
            raise timeout_error("greeting") from None
        raise ours(
            "connection_lost",
            "the server closed the connection before greeting us",
            temporary=True,
            stage="greeting",
        ) from None
    except (ssl.SSLError, TimeoutError) as exc:
        raise lost(exc, "connect") from None
    except OSError:
        raise ours(
            "connect_failed", "could not connect to the server", temporary=True, stage="connect"
        ) from None


# --- the session ---------------------------------------------------------------------------


class _Session:
    """One greeted session, step by step; ``stage`` names the step in progress."""

    def __init__(self, smtp: smtplib.SMTP, timeout: float) -> None:
        self.smtp, self.timeout, self.stage = smtp, timeout, "ehlo"
        self._declined: DeliveryError | None = None

    def decline(
        self, category: str, sentence: str, *, temporary: bool, stage: str
    ) -> DeliveryError:
        """We stop, between two commands, on what the server offers: still in step with it."""
        self._declined = ours(category, sentence, temporary=temporary, stage=stage)
        return self._declined

    def in_step(self, exc: DeliveryError) -> bool:
        """May we still say QUIT? Yes after a reply (but 421: it is closing) or our own
        decision between commands; no after a network, TLS or protocol failure."""
        if exc is self._declined:
            return True
        return exc.reply is not None and exc.reply.code != 421

    def reply(
        self, code: int, message: bytes | str, *, refused: Mapping[str, Reply] | None = None
    ) -> Reply:
        """The server's reply, or a protocol error when it was not an SMTP reply at all."""
        if not 200 <= code <= 599 or not isinstance(message, bytes):
            # smtplib's own messages are str ("Line too long."); a server's are bytes.
            raise protocol_error(self.stage, refused)
        return parse_reply(code, message)

    def expect_2xx(
        self, code: int, message: bytes | str, *, refused: Mapping[str, Reply] | None = None
    ) -> Reply:
        reply = self.reply(code, message, refused=refused)
        if not 200 <= code <= 299:
            raise refused_by_server(reply, self.stage, refused=refused)
        return reply

    def refusal(
        self, exc: smtplib.SMTPResponseException, *, refused: Mapping[str, Reply] | None = None
    ) -> DeliveryError:
        """A refusal smtplib raised instead of returning it (DATA, STARTTLS, AUTH)."""
        try:
            reply = self.reply(exc.smtp_code, exc.smtp_error, refused=refused)
        except DeliveryError as err:
            return err
        return refused_by_server(reply, self.stage, refused=refused)

    def hello(self) -> None:
        self.stage = "ehlo"
        code, message = self.smtp.ehlo()
        if not 200 <= code <= 299:
            code, message = self.smtp.helo()  # a server without ESMTP (then: no extensions)
        self.expect_2xx(code, message)

    def starttls(self, ctx: ssl.SSLContext) -> None:
        self.stage = "starttls"
        if not self.smtp.has_extn("starttls"):
            raise self.decline(
                "tls_failed",
                "the server does not offer STARTTLS",
                temporary=False,
                stage="starttls",
            )
        try:
            self.smtp.starttls(context=ctx)
        except smtplib.SMTPResponseException as exc:  # 454, 501...: never go on in clear
            raise self.refusal(exc) from None
        self.hello()  # RFC 3207: forget what was said in clear; ask again inside TLS

    def authenticate(self, s: SmtpSettings) -> None:
        self.stage = "auth"
        assert s.username is not None and s.secret is not None
        if not self.smtp.has_extn("auth"):
            raise self.decline(
                "auth_unavailable",
                "the server does not offer authentication (AUTH)",
                temporary=False,
                stage="auth",
            )
        offered = set(self.smtp.esmtp_features["auth"].upper().split())
        if s.auth == "oauth":
            mechanism = "OAUTHBEARER" if s.sasl == "oauthbearer" else "XOAUTH2"
            if mechanism not in offered:
                raise self.decline(
                    "auth_unavailable",
                    f"the server does not offer {mechanism} sign-in",
                    temporary=False,
                    stage="auth",
                )
            self._auth(mechanism, _oauth_responder(mechanism, s.username, s.secret))
            return
        self.smtp.user, self.smtp.password = s.username, s.secret  # smtplib's authobjects read them
        choices = (
            ("PLAIN", self.smtp.auth_plain),
            ("LOGIN", self.smtp.auth_login),
            ("CRAM-MD5", self.smtp.auth_cram_md5),
        )
        for mechanism, responder in choices:
            if mechanism in offered:
                # One mechanism, one attempt (smtplib's login() would try each in turn with
                # the same wrong password, tripping lockouts three times as fast).
                self._auth(mechanism, responder)
                return
        raise self.decline(
            "auth_unavailable",
            "the server offers no password sign-in we support (PLAIN, LOGIN or CRAM-MD5)",
            temporary=False,
            stage="auth",
        )

    def _auth(self, mechanism: str, responder: _AuthObject) -> None:
        try:
            self.smtp.auth(mechanism, responder)
        except smtplib.SMTPAuthenticationError as exc:
            raise self.refusal(exc) from None
        except UnicodeEncodeError:  # smtplib sends AUTH data as ASCII
            raise ours(
                "auth_failed",
                "the username or secret has characters SMTP sign-in cannot carry",
                temporary=False,
                stage="auth",
            ) from None

    def transaction(self, mail_from: str, rcpts: tuple[str, ...], payload: bytes) -> Accepted:
        self.stage = "mail"
        code, message = self.smtp.mail(mail_from, self._mail_options(mail_from, rcpts, payload))
        self.expect_2xx(code, message)

        self.stage = "rcpt"
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        deferred: dict[str, Reply] = {}
        for rcpt in rcpts:
            code, message = self.smtp.rcpt(rcpt)
            reply = self.reply(code, message, refused=refused)
            if 200 <= code <= 299:
                accepted.append(rcpt)
            elif code == 421:  # the server is closing the session: nothing more goes through
                raise refused_by_server(reply, "rcpt", refused=refused)
            elif reply.temporary:
                deferred[rcpt] = reply
            else:
                refused[rcpt] = reply
        if not accepted:
            # Deferred ones may pass later: the whole message is retried. Only when every
            # recipient was refused for good is it a permanent failure.
            first = next(iter(deferred.values()), None) or next(iter(refused.values()))
            raise refused_by_server(first, "rcpt", refused=refused)

        self.stage = "data"
        try:
            code, message = self.smtp.data(payload)
        except smtplib.SMTPDataError as exc:  # DATA itself was refused (not 354)
            raise self.refusal(exc, refused=refused) from None
        reply = self.expect_2xx(code, message, refused=refused)
        return Accepted(recipients=tuple(accepted), refused=refused, deferred=deferred, reply=reply)

    def _mail_options(self, mail_from: str, rcpts: tuple[str, ...], payload: bytes) -> list[str]:
        options: list[str] = []
        if self.smtp.has_extn("size"):
            options.append(f"SIZE={len(payload)}")
        if self.smtp.has_extn("8bitmime") and not payload.isascii():
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in (mail_from, *rcpts)):
            if not self.smtp.has_extn("smtputf8"):
                raise self.decline(
                    "smtputf8_unsupported",
                    "the server cannot take addresses with non-ASCII characters (no SMTPUTF8)",
                    temporary=False,
                    stage="mail",
                )
            options.append("SMTPUTF8")
        return options

    def finish(self, *, polite: bool) -> None:
        """QUIT when the server is still in step with us; close the socket in any case."""
        if polite and self.smtp.sock is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.smtp.sock.settimeout(min(self.timeout, QUIT_TIMEOUT))
                self.smtp.quit()
        self.smtp.close()


def _oauth_responder(mechanism: str, username: str, token: str) -> _AuthObject:
    """The SASL responses for XOAUTH2 (Google, Microsoft) or OAUTHBEARER (RFC 7628).

    When the token is refused, the server sends a 334 challenge with an error document; the
    client must answer it (XOAUTH2: an empty line; OAUTHBEARER: ``\\x01``) to get the final
    5xx, which is what the outbox then shows.
    """
    if mechanism == "OAUTHBEARER":
        authzid = username.replace("=", "=3D").replace(",", "=2C")  # RFC 5801 saslname
        initial, after_error = f"n,a={authzid},\x01auth=Bearer {token}\x01\x01", "\x01"
    else:
        initial, after_error = f"user={username}\x01auth=Bearer {token}\x01\x01", ""

    def respond(challenge: bytes | None = None) -> str:
        return initial if challenge is None else after_error

    return respond

"""Opening an IMAP session for a connection: vetted addresses, TLS modes, timeouts on every
socket, login.

``ssl`` and ``starttls`` verify the server certificate against the host *name* the user gave;
plaintext happens only when ``none`` was chosen explicitly — a failing STARTTLS never falls
back to plaintext. The TCP connection goes only to an address :mod:`shared.netsafety` vetted
when this session was opened (§6 Network safety: after resolution, at every connect).
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient, SocketTimeout, imap4, tls
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from shared.netsafety import NetworkRefused, Resolver, create_connection
from shared.networks import Networks
from worker.imap.errors import ConnectFailed, TlsUnavailable, login_failure

CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 120.0

Dial = Callable[[str, int, float | None], socket.socket]


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str
    password: str = field(repr=False)  # the OAuth access token when auth is "oauth"
    folders: tuple[str, ...] | None = None
    auth: str = "password"  # password | oauth
    sasl: str = "xoauth2"  # with oauth: xoauth2 | oauthbearer


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One context per CA setting, shared by every session: each context holds its own copy
    of the trusted certificates (about a megabyte), which a thousand mailboxes must not
    multiply. Contexts are safe to share between threads."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


class _PlainIMAP4(imap4.IMAP4WithTimeout):
    """imapclient's plain/STARTTLS transport with the socket from ``dial``.

    STARTTLS later wraps ``self.sock`` with ``server_hostname=self.host`` (imaplib), which is
    still the configured name: certificates are checked against it, not against the IP.
    """

    def __init__(self, host: str, port: int, timeout: float | None, dial: Dial) -> None:
        self._dial = dial  # set before imaplib's __init__ opens the connection
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return self._dial(self.host, self.port, timeout if timeout is not None else self._timeout)


class _TlsIMAP4(tls.IMAP4_TLS):
    """imapclient's implicit-TLS transport with the socket from ``dial``, wrapped exactly as
    imapclient does it (``tls.wrap_socket``: SNI and verification against ``self.host``)."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        timeout: float | None,
        dial: Dial,
    ) -> None:
        self._dial = dial
        super().__init__(host, port, ssl_context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = self._dial(self.host, self.port, timeout if timeout is not None else self._timeout)
        try:
            wrapped: socket.socket = tls.wrap_socket(sock, self.ssl_context, self.host)
            return wrapped
        except BaseException:
            sock.close()
            raise


class VettedIMAPClient(IMAPClient):
    """An IMAPClient whose TCP connection goes only to vetted addresses.

    Why this hook: IMAPClient builds its imaplib transport in one factory method,
    ``_create_IMAP4`` (called once, from ``__init__``), choosing between imapclient's
    ``tls.IMAP4_TLS`` and ``imap4.IMAP4WithTimeout``; both obtain their socket from imaplib's
    ``_create_socket(timeout)`` hook — the one imaplib's own ``IMAP4_SSL`` and those two classes
    override. We subclass the two transports to override that hook only, and this factory to
    use them. Everything above the socket (greeting, capabilities, STARTTLS, login, the read
    timeout) stays imapclient's unchanged code; nothing global is patched
    (``socket.getaddrinfo`` and ``socket.create_connection`` stay untouched for every other
    thread). ``stream`` mode (a local command) is never used by the poller and is refused.
    """

    def __init__(
        self,
        host: str,
        *,
        allowed: Networks,
        resolver: Resolver = socket.getaddrinfo,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("stream"):
            raise ValueError("stream mode is not available for vetted connections")
        self._allowed, self._resolver = allowed, resolver
        super().__init__(host, **kwargs)

    def _dial(self, host: str, port: int, timeout: float | None) -> socket.socket:
        try:
            return create_connection(
                host, port, self._allowed, timeout=timeout, resolver=self._resolver
            )
        except NetworkRefused:
            raise
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectFailed(f"connect to {host}:{port} failed") from exc

    def _create_IMAP4(self) -> imaplib.IMAP4:
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _TlsIMAP4(self.host, self.port, self.ssl_context, connect_timeout, self._dial)
        return _PlainIMAP4(self.host, self.port, connect_timeout, self._dial)


def open_session(
    s: ImapSettings,
    *,
    allowed: Networks,
    ca_file: str | None = None,
    read_timeout: float = READ_TIMEOUT,
    resolver: Resolver = socket.getaddrinfo,
) -> IMAPClient:
    """A logged-in session. ``allowed`` (the private networks the operator allows) is
    required: forgetting it must refuse private servers, not reach them."""
    timeout = SocketTimeout(connect=CONNECT_TIMEOUT, read=read_timeout)
    ctx = tls_context(ca_file) if s.security in ("ssl", "starttls") else None
    client = VettedIMAPClient(
        s.host,
        allowed=allowed,
        resolver=resolver,
        port=s.port,
        ssl=s.security == "ssl",
        ssl_context=ctx,
        timeout=timeout,
        use_uid=True,
    )
    try:
        if s.security == "starttls":
            _starttls(client, ctx)
        _login(client, s)
    except LoginError as exc:
        _close(client)
        raise login_failure(exc) from exc
    except BaseException:
        _close(client)
        raise
    return client


def _login(client: IMAPClient, s: ImapSettings) -> None:
    if s.auth != "oauth":
        client.login(s.username, s.password)
    elif s.sasl == "oauthbearer":
        client.oauthbearer_login(s.username, s.password)
    else:
        client.oauth2_login(s.username, s.password)


def _starttls(client: IMAPClient, ctx: ssl.SSLContext | None) -> None:
    try:
        client.starttls(ctx)
    except IMAPClientAbortError:
        raise
    except IMAPClientError as exc:  # not offered (CapabilityError) or refused: never go on in clear
        raise TlsUnavailable("STARTTLS is not available") from exc


def _close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):  # already broken; nothing left to release
        client.shutdown()

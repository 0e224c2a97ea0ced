"""Opening an IMAP session for a connection: TLS modes, timeouts on every socket, login.

``ssl`` and ``starttls`` verify the server certificate; plaintext happens only when ``none`` was
chosen explicitly — a failing STARTTLS never falls back to plaintext.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from worker.imap.errors import AuthFailed

CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 120.0


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str
    password: str
    folders: tuple[str, ...] | None = None


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def open_session(
    s: ImapSettings, *, ca_file: str | None = None, read_timeout: float = READ_TIMEOUT
) -> IMAPClient:
    from imapclient import SocketTimeout

    timeout = SocketTimeout(connect=CONNECT_TIMEOUT, read=read_timeout)
    ctx = tls_context(ca_file) if s.security in ("ssl", "starttls") else None
    client = IMAPClient(
        s.host, port=s.port, ssl=s.security == "ssl", ssl_context=ctx, timeout=timeout, use_uid=True
    )
    try:
        if s.security == "starttls":
            client.starttls(ctx)
        client.login(s.username, s.password)
    except LoginError as exc:
        _close(client)
        raise AuthFailed("authentication failed") from exc
    except BaseException:
        _close(client)
        raise
    return client


def _close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):  # already broken; nothing left to release
        client.shutdown()

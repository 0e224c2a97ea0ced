"""What can go wrong talking to an IMAP server, sorted by what the poller should do about it."""

from __future__ import annotations

import socket
import ssl

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError


class AuthFailed(Exception):
    """The server refused the credentials: stop retrying until they change (§6)."""


class LeaseLost(Exception):
    """Another poller owns this connection now: stop syncing it at once."""


TRANSIENT = (
    OSError,
    socket.timeout,
    ssl.SSLError,
    IMAPClientAbortError,
    IMAPClientError,
    ConnectionError,
    TimeoutError,
)


def is_auth_failure(exc: BaseException) -> bool:
    return isinstance(exc, (LoginError, AuthFailed))


def describe(exc: BaseException) -> str:
    """A short, credential-free description for ``last_error``."""
    if is_auth_failure(exc):
        return "authentication failed"
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

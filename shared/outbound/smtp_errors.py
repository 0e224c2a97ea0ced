"""What an upstream SMTP server answered, and what went wrong delivering to it, in the words an
outbox's ``last_error`` shows (§9 Delivery, §6 Network safety).

Two kinds of words. A server that greeted us with ``220`` speaks SMTP, and its replies are meant
for people: ``last_error`` is its reply code, enhanced status code and the first 200 characters
of its text, cleaned (:class:`Reply`). Anything else — no connection, a refused address, a TLS
failure, a timeout, a greeting that is not ``220`` — gets a category and a sentence of ours,
never bytes from the other end.

Temporary or permanent: the server's first digit decides where it spoke (4xx temporary, 5xx
permanent). Where it did not, the rule is that a configuration that cannot work is permanent
(retrying for hours would change nothing and hide the mistake from the sender): a certificate
that does not verify for the configured name, STARTTLS chosen but not offered, no usable AUTH
mechanism, a server that does not speak SMTP at all, a name that resolves only to addresses we
may not dial. Everything that may pass by itself — network errors, timeouts, dropped
connections, TLS handshakes cut short, DNS failures — is temporary.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

TEXT_LIMIT = 200

# RFC 3463: class.subject.detail; the class must agree with the reply code's first digit.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: ``text`` is printable only, multi-line replies joined into one line, and
    cut to the first 200 characters."""

    code: int
    enhanced: str | None
    text: str

    @property
    def temporary(self) -> bool:
        return not 500 <= self.code <= 599

    def __str__(self) -> str:
        return " ".join(p for p in (str(self.code), self.enhanced, self.text) if p)


def _printable(text: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return _SPACES.sub(" ", cleaned).strip()


def parse_reply(code: int, message: bytes | str) -> Reply:
    """A :class:`Reply` from smtplib's ``(code, message)``: ``message`` holds the text of each
    line of the reply, code prefixes removed, joined with ``\\n``."""
    raw = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    enhanced: str | None = None
    parts: list[str] = []
    for index, line in enumerate(raw.split("\n")):
        line = line.strip()
        m = _ENHANCED.match(line)
        if m and m.group(1) == str(code)[:1] and (index == 0 or m.group(0) == enhanced):
            # Multi-line replies repeat the first line's enhanced code: keep it once.
            enhanced = m.group(0)
            line = line[m.end() :]
        parts.append(line)
    return Reply(code, enhanced, _printable(" ".join(parts))[:TEXT_LIMIT])


class DeliveryError(Exception):
    """Delivery of a message failed as a whole: no recipient has it.

    ``temporary``: retry later (with backoff, within the retry window); otherwise the outbox
    entry is ``failed``. ``last_error``: what the outbox shows (see the module docstring).
    ``category``: a short machine word — ``rejected`` / ``deferred`` for a server's 5xx / 4xx,
    ``auth_failed`` when it refused our credentials (5xx to AUTH), else the category of our own
    sentence (``connect_failed``, ``tls_failed``, ``timeout`` ...). ``stage``: the step it
    failed at (``connect``, ``greeting``, ``ehlo``, ``starttls``, ``auth``, ``mail``, ``rcpt``,
    ``data``). ``reply``: the server's reply, when it gave one. ``refused``: recipients the
    server refused permanently before the failure (5xx to RCPT) — retrying will not help them.
    """

    def __init__(
        self,
        last_error: str,
        *,
        temporary: bool,
        category: str,
        stage: str,
        reply: Reply | None = None,
        refused: Mapping[str, Reply] | None = None,
    ) -> None:
        super().__init__(last_error)
        self.last_error = last_error
        self.temporary = temporary
        self.category = category
        self.stage = stage
        self.reply = reply
        self.refused: Mapping[str, Reply] = MappingProxyType(dict(refused or {}))

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only arguments: pickle needs help
        return (
            _restore,
            (
                self.last_error,
                self.temporary,
                self.category,
                self.stage,
                self.reply,
                dict(self.refused),
            ),
        )


def _restore(
    last_error: str,
    temporary: bool,
    category: str,
    stage: str,
    reply: Reply | None,
    refused: dict[str, Reply],
) -> DeliveryError:
    return DeliveryError(
        last_error,
        temporary=temporary,
        category=category,
        stage=stage,
        reply=reply,
        refused=refused,
    )


def refused_by_server(
    reply: Reply, stage: str, *, refused: Mapping[str, Reply] | None = None
) -> DeliveryError:
    """The server (which greeted us with 220) said no: its own words, its own verdict."""
    if stage == "auth" and not reply.temporary:
        category = "auth_failed"
    else:
        category = "deferred" if reply.temporary else "rejected"
    return DeliveryError(
        str(reply),
        temporary=reply.temporary,
        category=category,
        stage=stage,
        reply=reply,
        refused=refused,
    )


def ours(
    category: str,
    sentence: str,
    *,
    temporary: bool,
    stage: str,
    refused: Mapping[str, Reply] | None = None,
) -> DeliveryError:
    """A failure told in our words: ``"<category>: <sentence>"``."""
    return DeliveryError(
        f"{category}: {sentence}",
        temporary=temporary,
        category=category,
        stage=stage,
        refused=refused,
    )


def bad_greeting(code: int) -> DeliveryError:
    """The server did not greet us with 220: §9 says our words, not its text."""
    if 400 <= code <= 499:
        return ours(
            "server_busy",
            "the server did not accept a connection just now (it greeted us with a temporary "
            "refusal instead of 220)",
            temporary=True,
            stage="greeting",
        )
    if 500 <= code <= 599:
        return ours(
            "connection_refused",
            "the server refused to serve this connection (it greeted us with a permanent "
            "refusal instead of 220)",
            temporary=False,
            stage="greeting",
        )
    return ours(
        "protocol_error",
        "the server did not answer as an SMTP server (check the host, port and security settings)",
        temporary=False,
        stage="greeting",
    )


def timed_out(exc: BaseException) -> bool:
    """smtplib reports a read timeout as SMTPServerDisconnected raised while handling it."""
    cur: BaseException | None = exc
    for _ in range(5):
        if cur is None:
            return False
        if isinstance(cur, TimeoutError):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def timeout_error(stage: str) -> DeliveryError:
    return ours("timeout", "the server did not answer in time", temporary=True, stage=stage)


def lost(exc: BaseException, stage: str) -> DeliveryError:
    """A failure below SMTP (network, TLS) or an answer that is not SMTP: our words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # A certificate that does not verify for the configured name is a misconfiguration
        # (or an interception): retrying cannot fix it, and sending in clear is never an option.
        return ours(
            "tls_failed",
            "the server's certificate could not be verified for its host name",
            temporary=False,
            stage=stage,
        )
    if isinstance(exc, ssl.SSLError):
        # Handshakes cut short look the same as network trouble: retry.
        return ours(
            "tls_failed", "the TLS handshake with the server failed", temporary=True, stage=stage
        )
    if timed_out(exc):
        return timeout_error(stage)
    if isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(
        exc, smtplib.SMTPException
    ):  # closed by the server, or a broken socket (SMTPException is an OSError too)
        return ours(
            "connection_lost", "the connection to the server was lost", temporary=True, stage=stage
        )
    # What is left: an answer smtplib could not take (a reply line over 8 KiB, an AUTH
    # exchange that never ends).
    return protocol_error(stage)


def protocol_error(stage: str, refused: Mapping[str, Reply] | None = None) -> DeliveryError:
    """An answer that is not an SMTP reply, after a 220 greeting: out of step, retry."""
    return ours(
        "protocol_error",
        "the server's answer was not valid SMTP",
        temporary=True,
        stage=stage,
        refused=refused,
    )

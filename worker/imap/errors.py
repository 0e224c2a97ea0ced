"""What can go wrong talking to an IMAP server, sorted by what the poller should do about it,
and the words ``last_error`` uses for it.

``last_error`` is a category and a sentence of ours (§6 Network safety): never text the other
end sent. A server's words may still steer *when* we retry — a throttling code or a
"Suggested Backoff Time" is read as a number — but they are never copied anywhere.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from shared.netsafety import HostNotAllowed, HostNotFound
from shared.oauth.errors import ReauthRequired, TokenUnavailable


class AuthFailed(Exception):
    """The server refused the credentials: stop retrying until they change (§6)."""


class ConnectFailed(OSError):
    """No TCP connection to any vetted address of the server (refused, unreachable)."""


class TlsUnavailable(Exception):
    """``starttls`` was chosen but the server does not offer or refuses STARTTLS."""


class LoginInterrupted(Exception):
    """The server answered LOGIN with a temporary refusal or dropped the connection during
    it: not a verdict on the credentials, so retried (``hint`` holds any wait it asked for)."""


class LoginConnectionLost(LoginInterrupted):
    """The connection dropped in the middle of LOGIN."""


class SessionDue(Exception):
    """The session must sign in again now (its OAuth token is due): not a failure."""


class LeaseLost(Exception):
    """Another poller owns this connection now: stop syncing it at once."""


# The most a server may make us wait (§6: hints honoured, capped at 15 minutes).
HINT_CAP_SECONDS = 900.0
# A throttling code without a suggested time: wait this long before the next login.
THROTTLED_SECONDS = 300.0
# [OVERQUOTA] is what Gmail answers once a mailbox exceeded its daily command or bandwidth
# budget; such lockouts last hours, so the longest wait we allow.
OVERQUOTA_SECONDS = HINT_CAP_SECONDS

# Exchange Online: "... is throttled. Suggested Backoff Time: 201317 milliseconds".
_SUGGESTED = re.compile(
    r"suggested\s+backoff\s+time\s*:?\s*(\d{1,12})\s*(milliseconds|millisecond|ms|seconds|s)?",
    re.IGNORECASE,
)
# RFC 5530 response codes that say "not now" rather than "wrong credentials".
_TEMPORARY_CODES = ("[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]")
_HINT_SCAN = 4096  # hints sit in the first words of a response line; never scan megabytes


@dataclass(frozen=True)
class Diagnosis:
    category: str
    sentence: str
    retry: bool = True  # False: wait for new settings (auth_failed) or a reconnect
    hint_seconds: float | None = None  # the server asked us to wait at least this long
    # The connection's status to record; None: leave status and last_error as they are.
    status: str | None = "error"

    @property
    def last_error(self) -> str:
        return f"{self.category}: {self.sentence}"


def server_hint(text: str) -> float | None:
    """Seconds a server asked us to stay away, read from its response text; capped."""
    head = text[:_HINT_SCAN]
    upper = head.upper()
    wait: float | None = None
    m = _SUGGESTED.search(head)
    if m:
        unit = (m.group(2) or "ms").lower()
        wait = int(m.group(1)) / (1.0 if unit.startswith("s") else 1000.0)
    elif "[THROTTLED]" in upper:
        wait = THROTTLED_SECONDS
    if "[OVERQUOTA]" in upper:
        wait = max(wait or 0.0, OVERQUOTA_SECONDS)
    return None if wait is None else min(HINT_CAP_SECONDS, wait)


def _texts(exc: BaseException) -> str:
    """The exception's text and its causes' (where a server's response code may sit)."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(parts) < 5:
        seen.add(id(cur))
        parts.append(str(cur)[:_HINT_SCAN])
        cur = cur.__cause__ or cur.__context__
    return " ".join(parts)


def login_failure(exc: LoginError) -> Exception:
    """What a LoginError really is. imapclient turns every error during LOGIN into one — a
    dropped connection and a "NO [UNAVAILABLE]" as much as wrong credentials — and only the
    last may stop retries for good."""
    cause = exc.__context__
    text = _texts(exc)
    if isinstance(cause, (IMAPClientAbortError, OSError)):
        return LoginConnectionLost("the connection was lost during login")
    hint = server_hint(text)
    if hint is not None or any(code in text.upper() for code in _TEMPORARY_CODES):
        return LoginInterrupted("the server refused the login for now")
    return AuthFailed("authentication failed")


def diagnose(exc: BaseException, *, oauth: bool = False) -> Diagnosis:
    """Sort an exception into a category with a sentence of ours and the retry it calls for.
    ``oauth``: the session signed in with an OAuth token, which only a reconnect replaces."""
    if isinstance(exc, LoginError):
        exc = login_failure(exc)
    if isinstance(exc, ReauthRequired):
        return Diagnosis("reauth_required", exc.sentence, retry=False, status="reauth_required")
    if isinstance(exc, TokenUnavailable):
        # §10: provider trouble changes no status until it lasts past 15 minutes.
        return Diagnosis(
            "oauth_unavailable", exc.sentence, status="error" if exc.persisting else None
        )
    if isinstance(exc, AuthFailed) and oauth:
        return Diagnosis(
            "reauth_required",
            "the mail server refused the OAuth sign-in (IMAP access may be off for this "
            "mailbox). Reconnect the mailbox to fix it.",
            retry=False,
            status="reauth_required",
        )
    if isinstance(exc, AuthFailed):
        return Diagnosis(
            "auth_failed",
            "the server refused the username or password",
            retry=False,
            status="auth_failed",
        )
    if isinstance(exc, HostNotAllowed):
        return Diagnosis("host_not_allowed", str(exc))
    if isinstance(exc, HostNotFound):
        return Diagnosis("host_not_found", str(exc))
    # Only what came from the server may carry a hint (never, say, a database error that
    # quotes a message's text).
    spoken = isinstance(exc, (IMAPClientError, LoginInterrupted, TlsUnavailable))
    hint = server_hint(_texts(exc)) if spoken else None
    if hint is not None:
        return Diagnosis(
            "throttled",
            "the server asked us to slow down (throttling or a usage limit); retrying later",
            hint_seconds=hint,
        )
    if isinstance(exc, LoginConnectionLost):
        return Diagnosis("connection_lost", "the connection to the server was lost")
    if isinstance(exc, LoginInterrupted):
        return Diagnosis("server_error", "the server did not accept a login just now")
    if isinstance(exc, TlsUnavailable):
        return Diagnosis("tls_failed", "the server does not offer STARTTLS")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Diagnosis("tls_failed", "the server's certificate could not be verified")
    if isinstance(exc, ssl.SSLError):
        return Diagnosis("tls_failed", "the TLS handshake with the server failed")
    if isinstance(exc, TimeoutError):
        return Diagnosis("timeout", "the server did not answer in time")
    if isinstance(exc, ConnectFailed):
        return Diagnosis("connect_failed", "could not connect to the server")
    if isinstance(exc, IMAPClientAbortError) and str(exc).startswith("unexpected"):
        return Diagnosis("protocol_error", "the server's answer was not valid IMAP")
    if isinstance(exc, (IMAPClientAbortError, OSError)):
        return Diagnosis("connection_lost", "the connection to the server was lost")
    if isinstance(exc, IMAPClientError):
        # imapclient's "<command> failed: ..." is a tagged NO/BAD; anything else imaplib or
        # imapclient raise is an answer they could not make sense of (a non-IMAP greeting).
        if re.match(r"[\w ]{1,40} failed: ", str(exc)[:64]):
            return Diagnosis("server_error", "the server refused a command")
        return Diagnosis("protocol_error", "the server's answer was not valid IMAP")
    return Diagnosis("internal_error", "the sync stopped on an error on our side; retrying")


def describe(exc: BaseException, *, oauth: bool = False) -> str:
    """``last_error`` for this exception: ``"<category>: <sentence>"``, nothing the server sent."""
    return diagnose(exc, oauth=oauth).last_error

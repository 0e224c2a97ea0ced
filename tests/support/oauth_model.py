"""Data of the test suite's OAuth 2 provider: records, replies, errors, small helpers.

Shared by ``oauth_provider.py`` (the rules and state) and ``oauth_server.py`` (HTTP).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, payload: Mapping[str, Any], *headers: tuple[str, str]) -> Reply:
    return Reply(status, json.dumps(payload).encode(), "application/json", tuple(headers))


def html_reply(status: int, message: str) -> Reply:
    page = f"<!doctype html><title>{status}</title><p>{html.escape(message)}</p>\n"
    return Reply(status, page.encode(), "text/html; charset=utf-8")


def redirect_reply(location: str) -> Reply:
    return Reply(302, b"", "text/plain", (("Location", location),))


@dataclass(frozen=True)
class Consent:
    """Who the user signs in as at the authorize endpoint, and whether they agree.

    ``email_verified=None`` leaves the claim out of ID token, userinfo and introspection
    (as Microsoft does). ``sub`` defaults to a stable value derived from the email.
    """

    email: str
    email_verified: bool | None = True
    sub: str | None = None
    deny: bool = False

    @property
    def subject(self) -> str:
        if self.sub is not None:
            return self.sub
        return "sub-" + hashlib.sha256(self.email.lower().encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str | None  # None: a public client (PKCE only, no authentication)
    redirect_uris: frozenset[str]


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint (no secrets in here).

    ``outcome`` is ``"ok"``, the OAuth error code answered (``"invalid_grant"``, ...), or
    ``"injected_<status>"`` for a failure set up with ``fail_token_requests``.
    """

    grant_type: str
    client_id: str | None
    time: float
    outcome: str
    status: int
    email: str | None = None


@dataclass(frozen=True)
class AuthorizeRequest:
    """One request to the authorize endpoint; ``outcome`` is ``"code"``, an error code
    sent back in the redirect, or ``"refused"`` (a 400 page, no redirect)."""

    client_id: str
    redirect_uri: str
    scope: str
    outcome: str
    params: Mapping[str, str]


@dataclass
class Grant:
    client_id: str
    identity: Consent
    scope: str
    nonce: str | None
    revoked: bool = False
    tokens: list[str] = field(default_factory=list)  # every access/refresh token issued


@dataclass
class AccessToken:
    grant: Grant
    scope: str
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class RefreshToken:
    grant: Grant
    revoked: bool = False


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    challenge: str
    identity: Consent
    scope: str
    nonce: str | None
    expires_at: float
    used: bool = False


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers

    def reply(self) -> Reply:
        body = {"error": self.error, "error_description": self.description}
        return json_reply(self.status, body, *NO_STORE, *self.headers)


def identity_claims(identity: Consent) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": identity.subject, "email": identity.email}
    if identity.email_verified is not None:
        claims["email_verified"] = identity.email_verified
    return claims


def basic_credentials(authorization: str) -> tuple[str, str]:
    """(client_id, secret) of an HTTP Basic header, ("", "") when there is none."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ("", "")
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, secret = text.partition(":")
    return client_id, secret


def same_secret(given: str, expected: str) -> bool:
    if hmac.compare_digest(given.encode(), expected.encode()):
        return True
    return hmac.compare_digest(unquote_plus(given).encode(), expected.encode())


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def add_query(url: str, params: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

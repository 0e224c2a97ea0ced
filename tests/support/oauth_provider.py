"""The state and rules of the test suite's OAuth 2 / OpenID provider (no sockets here).

``OAuthProvider`` holds clients, consents, authorization codes, grants and tokens in
memory behind one lock, answers the endpoints as :class:`Reply` values, and offers the
controls tests use to steer it (consent, revocation, expiry, injected failures and
delays) plus records to assert on. ``tests/support/oauth_server.py`` puts it behind a
real HTTP server.

Rules it enforces, as real providers do: authorization code with PKCE S256 only; codes
are single-use (any redemption attempt burns one), live ``code_ttl`` seconds and are bound
to client, redirect URI and challenge; refresh tokens rotate (the old one is dead once a
new one is issued) unless ``rotate_refresh_tokens`` is off (Google's way); a revoked grant
kills every token issued under it.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

from joserfc import jwt
from joserfc.jwk import RSAKey

from .oauth_model import (
    NO_STORE,
    AccessToken,
    AuthCode,
    AuthorizeRequest,
    Client,
    Consent,
    Grant,
    OAuthError,
    RefreshToken,
    Reply,
    TokenRequest,
    add_query,
    basic_credentials,
    html_reply,
    identity_claims,
    json_reply,
    redirect_reply,
    s256,
    same_secret,
)

FailureBody = Literal["json", "html", "empty"]

_VERIFIER_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")


@dataclass
class _Faults:
    fail_left: int = 0
    fail_status: int = 503
    fail_body: FailureBody = "json"
    delay: float = 0.0
    delay_after: bool = False
    refresh_errors: deque[tuple[str, str | None, int]] = field(default_factory=deque)
    introspection_fail_left: int = 0
    introspection_fail_status: int = 503


class OAuthProvider:
    """In-memory OAuth 2 authorization server model; thread-safe."""

    def __init__(
        self,
        *,
        access_token_ttl: float = 3600,
        code_ttl: float = 60,
        rotate_refresh_tokens: bool = True,
        revoke_grant_on_refresh_reuse: bool = False,
    ) -> None:
        self.access_token_ttl = access_token_ttl
        self.code_ttl = code_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.revoke_grant_on_refresh_reuse = revoke_grant_on_refresh_reuse
        self.issuer = ""  # set by the HTTP server once it knows its address
        self._lock = threading.RLock()
        self._signing_key = RSAKey.generate_key(
            2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"}
        )
        self._clients: dict[str, Client] = {}
        self._default_identity: Consent | None = None
        self._consents: deque[Consent] = deque()
        self._codes: dict[str, AuthCode] = {}
        self._grants: list[Grant] = []
        self._access_tokens: dict[str, AccessToken] = {}
        self._refresh_tokens: dict[str, RefreshToken] = {}
        self._issued_refresh: list[str] = []
        self._revoked: set[str] = set()
        self._seen: set[str] = set()
        self._token_requests: list[TokenRequest] = []
        self._authorize_requests: list[AuthorizeRequest] = []
        self._hits: Counter[str] = Counter()
        self._faults = _Faults()

    # ------------------------------------------------------------------ test controls

    def add_client(
        self, client_id: str, client_secret: str | None, redirect_uris: list[str] | tuple[str, ...]
    ) -> Client:
        """Register a client; ``client_secret=None`` makes it public (no authentication)."""
        client = Client(client_id, client_secret, frozenset(redirect_uris))
        with self._lock:
            self._clients[client_id] = client
            if client_secret:
                self._seen.add(client_secret)
        return client

    def set_identity(
        self, email: str, *, email_verified: bool | None = True, sub: str | None = None
    ) -> None:
        """Default consent (granted) for authorize requests when no ``next_consent`` is queued."""
        with self._lock:
            self._default_identity = Consent(email, email_verified, sub)

    def next_consent(
        self,
        email: str = "",
        *,
        email_verified: bool | None = True,
        sub: str | None = None,
        deny: bool = False,
    ) -> None:
        """Queue the answer to the next authorize request (``deny`` → error=access_denied)."""
        if not email and not deny:
            raise ValueError("a granted consent needs an email")
        with self._lock:
            self._consents.append(Consent(email, email_verified, sub, deny))

    def revoke_grant(self, email: str) -> int:
        """Revoke every grant of ``email``: its access and refresh tokens and unused codes
        stop working. Returns the number of grants revoked."""
        count = 0
        with self._lock:
            for grant in self._grants:
                if grant.identity.email.lower() == email.lower() and not grant.revoked:
                    self._revoke_grant_locked(grant)
                    count += 1
            for code in self._codes.values():
                if code.identity.email.lower() == email.lower():
                    code.used = True
        return count

    def expire_access_tokens(self, email: str | None = None) -> int:
        """Make the live access tokens (of ``email``, or all) expired now; returns how many."""
        now = time.time()
        count = 0
        with self._lock:
            for token in self._access_tokens.values():
                mine = email is None or token.grant.identity.email.lower() == email.lower()
                if mine and token.expires_at > now:
                    token.expires_at = now - 1
                    count += 1
        return count

    def fail_token_requests(self, n: int, status: int = 503, *, body: FailureBody = "json") -> None:
        """The next ``n`` token requests answer ``status`` without being processed.

        ``body``: ``"json"`` (``{"error": "temporarily_unavailable"}``), ``"html"`` (an
        error page, like a load balancer's) or ``"empty"``.
        """
        with self._lock:
            self._faults.fail_left = n
            self._faults.fail_status = status
            self._faults.fail_body = body

    def token_delay(self, seconds: float, *, after_processing: bool = False) -> None:
        """Every token request waits ``seconds`` (0 turns it off) before it is processed,
        or with ``after_processing`` between processing and answering (the provider has
        already rotated the refresh token when the client gives up or dies)."""
        with self._lock:
            self._faults.delay = seconds
            self._faults.delay_after = after_processing

    def error_for_refresh(
        self, error: str, description: str | None = None, *, times: int = 1, status: int = 400
    ) -> None:
        """The next ``times`` refresh requests answer this OAuth error (tokens untouched)."""
        with self._lock:
            for _ in range(times):
                self._faults.refresh_errors.append((error, description, status))

    def fail_introspection_requests(self, n: int, status: int = 503) -> None:
        """The next ``n`` introspection requests answer ``status`` (Dovecot then answers
        the login ``NO [UNAVAILABLE]``, a temporary failure)."""
        with self._lock:
            self._faults.introspection_fail_left = n
            self._faults.introspection_fail_status = status

    def clear_faults(self) -> None:
        """Undo every injected failure and delay (token, refresh and introspection)."""
        with self._lock:
            self._faults = _Faults()

    # ------------------------------------------------------------------ records

    @property
    def token_requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._token_requests)

    @property
    def authorize_requests(self) -> list[AuthorizeRequest]:
        with self._lock:
            return list(self._authorize_requests)

    def count(
        self,
        grant_type: str | None = None,
        *,
        outcome: str | None = None,
        client_id: str | None = None,
        email: str | None = None,
    ) -> int:
        """Number of token requests matching every filter given."""
        with self._lock:
            return sum(
                1
                for r in self._token_requests
                if (grant_type is None or r.grant_type == grant_type)
                and (outcome is None or r.outcome == outcome)
                and (client_id is None or r.client_id == client_id)
                and (email is None or (r.email or "").lower() == email.lower())
            )

    def hits(self, endpoint: str) -> int:
        """Requests seen by an endpoint: authorize, token, userinfo, introspect, jwks,
        discovery."""
        with self._lock:
            return self._hits[endpoint]

    @property
    def issued_refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._issued_refresh)

    @property
    def issued_access_tokens(self) -> list[str]:
        with self._lock:
            return list(self._access_tokens)

    @property
    def revoked(self) -> set[str]:
        """Access and refresh tokens revoked (by rotation, reuse or ``revoke_grant``)."""
        with self._lock:
            return set(self._revoked)

    def all_secrets(self) -> set[str]:
        """Every token, code, ID token, client secret and code verifier issued or presented."""
        with self._lock:
            return {s for s in self._seen if s}

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._signing_key.as_dict(private=False)]}

    # ------------------------------------------------------------------ endpoints

    def handle_authorize(self, params: Mapping[str, str]) -> Reply:
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        scope = params.get("scope", "")
        with self._lock:
            self._hits["authorize"] += 1
            client = self._clients.get(client_id)
            problem = None
            if client is None:
                problem = f"unknown client_id {client_id!r}"
            elif redirect_uri not in client.redirect_uris:
                problem = f"redirect_uri {redirect_uri!r} is not registered for this client"
            if problem is not None:
                self._record_authorize(params, "refused")
                return html_reply(400, problem)
            error = self._authorize_error(params)
            if error is not None:
                self._record_authorize(params, error[0])
                return self._redirect_error(redirect_uri, params, *error)
            if self._consents:
                consent = self._consents.popleft()
            elif self._default_identity is not None:
                consent = self._default_identity
            else:
                self._record_authorize(params, "refused")
                return html_reply(
                    500, "LocalOAuthServer: no consent queued (call next_consent or set_identity)"
                )
            if consent.deny:
                self._record_authorize(params, "access_denied")
                return self._redirect_error(
                    redirect_uri, params, "access_denied", "the user declined"
                )
            code = "ac_" + secrets.token_urlsafe(32)
            self._codes[code] = AuthCode(
                client_id,
                redirect_uri,
                params["code_challenge"],
                consent,
                scope,
                params.get("nonce"),
                time.time() + self.code_ttl,
            )
            self._seen.add(code)
            self._record_authorize(params, "code")
        answer = {"code": code}
        if "state" in params:
            answer["state"] = params["state"]
        return redirect_reply(add_query(redirect_uri, answer))

    def handle_token(self, form: Mapping[str, str] | None, authorization: str | None) -> Reply:
        """``form`` is None when the body repeated a parameter (RFC 6749 §3.2 forbids it)."""
        repeated = form is None
        form = form or {}
        grant_type = form.get("grant_type", "")
        basic_id, basic_secret = basic_credentials(authorization or "")
        client_id = basic_id or form.get("client_id")
        with self._lock:
            self._hits["token"] += 1
            for name in ("code", "code_verifier", "refresh_token", "client_secret"):
                if form.get(name):
                    self._seen.add(form[name])
            self._seen.add(basic_secret)
            faults = self._faults
            injected = None
            if faults.fail_left > 0:
                faults.fail_left -= 1
                injected = _failure_reply(faults.fail_status, faults.fail_body)
            delay, delay_after = faults.delay, faults.delay_after
        if delay and not delay_after:
            time.sleep(delay)
        if injected is not None:
            self._record_token(grant_type, client_id, f"injected_{injected.status}", injected)
            return injected
        email = None
        with self._lock:
            try:
                if repeated:
                    raise OAuthError("invalid_request", "a parameter was repeated")
                client = self._authenticate_client(form, authorization)
                if grant_type == "authorization_code":
                    payload, email = self._redeem_code(client, form)
                elif grant_type == "refresh_token":
                    payload, email = self._refresh(client, form)
                else:
                    raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r}")
                reply = json_reply(200, payload, *NO_STORE)
                outcome = "ok"
            except _RefreshFailure as exc:
                reply, outcome, email = exc.error.reply(), exc.error.error, exc.email
            except OAuthError as exc:
                reply, outcome = exc.reply(), exc.error
            self._record_token(grant_type, client_id, outcome, reply, email)
        if delay and delay_after:
            time.sleep(delay)
        return reply

    def handle_userinfo(self, token: str | None) -> Reply:
        with self._lock:
            self._hits["userinfo"] += 1
            record = self._live_access_token(token)
            if record is None:
                challenge = ("WWW-Authenticate", 'Bearer error="invalid_token"')
                return json_reply(401, {"error": "invalid_token"}, challenge)
            identity = record.grant.identity
            return json_reply(200, identity_claims(identity))

    def handle_introspect(self, token: str | None) -> Reply:
        """RFC 7662. An inactive token answers ``{"active": false}`` only."""
        with self._lock:
            self._hits["introspect"] += 1
            if self._faults.introspection_fail_left > 0:
                self._faults.introspection_fail_left -= 1
                return json_reply(self._faults.introspection_fail_status, {"error": "unavailable"})
            record = self._live_access_token(token)
            if record is None:
                return json_reply(200, {"active": False})
            grant = record.grant
            payload: dict[str, Any] = {
                "active": True,
                "scope": record.scope,
                "client_id": grant.client_id,
                "username": grant.identity.email,
                "token_type": "Bearer",
                "exp": int(record.expires_at),
                "iat": int(record.issued_at),
                "iss": self.issuer,
                **identity_claims(grant.identity),
            }
            return json_reply(200, payload)

    def handle_jwks(self) -> Reply:
        with self._lock:
            self._hits["jwks"] += 1
        return json_reply(200, self.jwks)

    def handle_discovery(self, urls: Mapping[str, str]) -> Reply:
        with self._lock:
            self._hits["discovery"] += 1
        return json_reply(
            200,
            {
                "issuer": self.issuer,
                **urls,
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                    "none",
                ],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile", "offline_access"],
            },
        )

    # ------------------------------------------------------------------ internals

    def _authorize_error(self, params: Mapping[str, str]) -> tuple[str, str] | None:
        if params.get("response_type") != "code":
            return ("unsupported_response_type", "only response_type=code is supported")
        if not params.get("code_challenge"):
            return ("invalid_request", "PKCE is required (code_challenge missing)")
        if params.get("code_challenge_method") != "S256":
            return ("invalid_request", "code_challenge_method must be S256")
        return None

    def _redirect_error(
        self, redirect_uri: str, params: Mapping[str, str], error: str, description: str
    ) -> Reply:
        answer = {"error": error, "error_description": description}
        if "state" in params:
            answer["state"] = params["state"]
        return redirect_reply(add_query(redirect_uri, answer))

    def _record_authorize(self, params: Mapping[str, str], outcome: str) -> None:
        self._authorize_requests.append(
            AuthorizeRequest(
                params.get("client_id", ""),
                params.get("redirect_uri", ""),
                params.get("scope", ""),
                outcome,
                dict(params),
            )
        )

    def _record_token(
        self,
        grant_type: str,
        client_id: str | None,
        outcome: str,
        reply: Reply,
        email: str | None = None,
    ) -> None:
        with self._lock:
            self._token_requests.append(
                TokenRequest(grant_type, client_id, time.time(), outcome, reply.status, email)
            )

    def _authenticate_client(self, form: Mapping[str, str], authorization: str | None) -> Client:
        secret: str | None
        challenge: tuple[tuple[str, str], ...]
        if authorization:
            if not authorization.lower().startswith("basic "):
                raise OAuthError("invalid_client", "unsupported Authorization scheme", 401)
            if "client_secret" in form:
                raise OAuthError("invalid_request", "more than one client authentication")
            client_id, secret = basic_credentials(authorization)
            if form.get("client_id", client_id) != client_id:
                raise OAuthError("invalid_request", "client_id differs from the Basic one")
            challenge = (("WWW-Authenticate", 'Basic realm="token"'),)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
            challenge = ()
        # RFC 6749 §2.3.1 form-encodes Basic credentials; Authlib sends them raw.
        client = self._clients.get(client_id) or self._clients.get(unquote_plus(client_id))
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401, challenge)
        if client.client_secret is None:
            if secret:
                raise OAuthError("invalid_client", "public client sent a secret", 401, challenge)
            return client
        if secret is None or not same_secret(secret, client.client_secret):
            raise OAuthError("invalid_client", "client authentication failed", 401, challenge)
        return client

    def _redeem_code(self, client: Client, form: Mapping[str, str]) -> tuple[dict[str, Any], str]:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.client_id != client.client_id:
            raise OAuthError("invalid_grant", "unknown authorization code")
        if code.used:
            raise OAuthError("invalid_grant", "authorization code already used")
        code.used = True  # any redemption attempt burns the code
        if code.expires_at <= time.time():
            raise OAuthError("invalid_grant", "authorization code expired")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER_RE.fullmatch(verifier) or not same_secret(s256(verifier), code.challenge):
            raise OAuthError("invalid_grant", "PKCE verification failed")
        grant = Grant(client.client_id, code.identity, code.scope, code.nonce)
        self._grants.append(grant)
        return self._issue(grant, grant.scope, refresh=True), grant.identity.email

    def _refresh(self, client: Client, form: Mapping[str, str]) -> tuple[dict[str, Any], str]:
        token = form.get("refresh_token", "")
        record = self._refresh_tokens.get(token)
        email = record.grant.identity.email if record is not None else None
        if self._faults.refresh_errors:
            error, description, status = self._faults.refresh_errors.popleft()
            raise _RefreshFailure(OAuthError(error, description or error, status), email)
        if record is None or record.grant.client_id != client.client_id:
            raise _RefreshFailure(OAuthError("invalid_grant", "unknown refresh token"), email)
        grant = record.grant
        if grant.revoked:
            raise _RefreshFailure(OAuthError("invalid_grant", "the grant was revoked"), email)
        if record.revoked:
            if self.revoke_grant_on_refresh_reuse:
                self._revoke_grant_locked(grant)
            raise _RefreshFailure(
                OAuthError("invalid_grant", "refresh token was already used"), email
            )
        scope = form.get("scope") or grant.scope
        if not set(scope.split()) <= set(grant.scope.split()):
            raise _RefreshFailure(OAuthError("invalid_scope", "scope exceeds the grant"), email)
        if self.rotate_refresh_tokens:
            record.revoked = True
            self._revoked.add(token)
        return self._issue(grant, scope, refresh=self.rotate_refresh_tokens), grant.identity.email

    def _issue(self, grant: Grant, scope: str, *, refresh: bool) -> dict[str, Any]:
        now = time.time()
        ttl = self.access_token_ttl
        access = "at_" + secrets.token_urlsafe(32)
        self._access_tokens[access] = AccessToken(grant, scope, now, now + ttl)
        grant.tokens.append(access)
        self._seen.add(access)
        payload: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": max(1, round(ttl)),
            "scope": scope,
        }
        if refresh:
            token = "rt_" + secrets.token_urlsafe(32)
            self._refresh_tokens[token] = RefreshToken(grant)
            self._issued_refresh.append(token)
            grant.tokens.append(token)
            self._seen.add(token)
            payload["refresh_token"] = token
        if "openid" in scope.split():
            id_token = self._id_token(grant, now)
            self._seen.add(id_token)
            payload["id_token"] = id_token
        return payload

    def _id_token(self, grant: Grant, now: float) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": grant.client_id,
            "iat": int(now),
            "exp": int(now) + 3600,
            "preferred_username": grant.identity.email,
            **identity_claims(grant.identity),
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        header = {"alg": "RS256", "kid": self._signing_key.kid}
        return jwt.encode(header, claims, self._signing_key)

    def _live_access_token(self, token: str | None) -> AccessToken | None:
        record = self._access_tokens.get(token or "")
        if record is None or record.revoked or record.grant.revoked:
            return None
        if record.expires_at <= time.time():
            return None
        return record

    def _revoke_grant_locked(self, grant: Grant) -> None:
        grant.revoked = True
        for token in grant.tokens:
            self._revoked.add(token)
            if token in self._access_tokens:
                self._access_tokens[token].revoked = True
            if token in self._refresh_tokens:
                self._refresh_tokens[token].revoked = True


class _RefreshFailure(Exception):
    """An OAuthError from the refresh grant, with the grant's email for the record."""

    def __init__(self, error: OAuthError, email: str | None) -> None:
        super().__init__(str(error))
        self.error, self.email = error, email


def _failure_reply(status: int, body: FailureBody) -> Reply:
    if body == "json":
        return json_reply(status, {"error": "temporarily_unavailable"}, *NO_STORE)
    if body == "html":
        return html_reply(status, "Service Unavailable")
    return Reply(status, b"", "text/plain")

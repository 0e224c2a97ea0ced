"""Connecting a mailbox with OAuth (§10): the authorization request and its callback.

``start`` records a single-use state bound to the caller and what they asked to connect, and
answers the provider's authorization URL (PKCE S256 via Authlib). ``finish`` takes the state
(atomically: a replayed callback finds it used and changes nothing), exchanges the code, asks
the provider whose mailbox it is, and creates or reconnects the connection under the rules of
§3 — as the caller, with their permissions as they are now — with its grant, in one
transaction. The state is never stored in clear (only its SHA-256), the verifier is encrypted,
and neither the code nor any token is logged or returned.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox, hash_token
from shared.db.base import utcnow
from shared.db.engine import rowcount
from shared.db.models import Connection, OAuthGrant, OAuthState, User
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.netsafety import NetworkRefused
from shared.oauth.client import OAuth2Client
from shared.oauth.errors import classify_refusal
from shared.oauth.identity import IdentityError, mailbox_identity
from shared.oauth.providers import OAuthProvider
from shared.oauth.tokens import grant_values
from shared.principal import Principal
from shared.services import connections as conns
from shared.services.accounts import bump_config_version

STATE_TTL = timedelta(minutes=10)
STATE_KEEP = timedelta(days=1)  # used or expired states are deleted after this
# Authorizations one user may have pending at once; starting another drops the oldest.
MAX_PENDING_PER_USER = 20

ClientFactory = Callable[[OAuthProvider], OAuth2Client]


class CallbackError(Exception):
    """What the callback page says went wrong: an HTTP status, an error code, a sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Connected:
    connection_id: int
    address: str
    kind: str
    provider: str
    reconnected: bool


def provider_named(providers: Mapping[str, OAuthProvider], name: str) -> OAuthProvider:
    provider = providers.get(name.lower())
    if provider is None:
        raise Invalid(
            f"no OAuth provider named {name!r} is configured",
            code="unknown_provider",
            details={"known": sorted(providers)},
        )
    return provider


def start(
    *,
    session: Session,
    principal: Principal,
    box: SecretBox,
    providers: Mapping[str, OAuthProvider],
    client_for: ClientFactory,
    provider_name: str,
    kind: str | None,
    user_id: int | None = None,
    inbox_id: int | None = None,
    connection_id: int | None = None,
    imap_since: date | None = None,
) -> str:
    """The authorization URL to send the browser to (§10 Connect)."""
    principal.require_user()
    provider = provider_named(providers, provider_name)
    if connection_id is not None:  # reconnect: the permissions of changing that connection
        conn = conns.get_connection(
            session=session, principal=principal, connection_id=connection_id
        )
        conns.require_manager(session=session, principal=principal, conn=conn)
        if kind is not None and kind != conn.kind:
            raise Invalid("kind does not match the connection", details={"field": "kind"})
        kind, user_id, inbox_id = conn.kind, conn.user_id, conn.inbox_id
    else:
        if kind is None:
            raise Invalid("kind is required", details={"field": "kind"})
        user_id, _ = conns.resolve_owner(
            session=session, principal=principal, kind=kind, user_id=user_id, inbox_id=inbox_id
        )
    state, verifier = secrets.token_urlsafe(32), generate_token(64)
    now = utcnow()
    session.execute(sa.delete(OAuthState).where(OAuthState.expires_at < now - STATE_KEEP))
    _drop_oldest_pending(session, principal.user_id, now)
    session.add(
        OAuthState(
            state_hash=hash_token(state),
            account_id=principal.user_account_id(),
            caller_id=principal.user_id,
            provider=provider.name,
            kind=kind,
            user_id=user_id,
            inbox_id=inbox_id if kind == "team" else None,
            connection_id=connection_id,
            imap_since=imap_since,
            code_verifier_enc=box.encrypt(verifier),
            expires_at=now + STATE_TTL,
        )
    )
    session.flush()
    with client_for(provider) as client:
        url, _ = client.create_authorization_url(
            provider.authorize_url, state=state, code_verifier=verifier, **provider.authorize_params
        )
    return str(url)


def _drop_oldest_pending(session: Session, caller_id: int | None, now: datetime) -> None:
    """Keep a user's pending authorizations bounded: beyond the newest
    MAX_PENDING_PER_USER - 1, the oldest are dropped (their links stop working)."""
    keep = (
        sa.select(OAuthState.id)
        .where(
            OAuthState.caller_id == caller_id,
            OAuthState.used_at.is_(None),
            OAuthState.expires_at > now,
        )
        .order_by(OAuthState.id.desc())
        .limit(MAX_PENDING_PER_USER - 1)
    )
    session.execute(
        sa.delete(OAuthState).where(
            OAuthState.caller_id == caller_id,
            OAuthState.used_at.is_(None),
            OAuthState.id.not_in(keep.scalar_subquery()),
        )
    )


def finish(
    *,
    sessions: sessionmaker[Session],
    box: SecretBox,
    providers: Mapping[str, OAuthProvider],
    client_for: ClientFactory,
    state: str | None,
    code: str | None,
    error: str | None,
) -> Connected:
    """The callback: raises CallbackError with what to tell the person in the browser."""
    pending = _take_state(sessions, state)
    if error or not code:
        raise CallbackError(
            400,
            "oauth_consent_refused",
            "The provider did not grant access (consent was refused or cancelled). "
            "Nothing was connected.",
        )
    provider = providers.get(pending.provider)
    if provider is None:
        raise CallbackError(400, "unknown_provider", "This OAuth provider is no longer configured.")
    verifier = box.decrypt(pending.code_verifier_enc)
    with client_for(provider) as client:
        token = _exchange(client, provider, code, verifier)
        try:
            identity = mailbox_identity(client, provider, token)
        except IdentityError as exc:
            raise CallbackError(400, exc.code, f"{exc}. Nothing was connected.") from None
        except (httpx.HTTPError, NetworkRefused) as exc:
            raise _unavailable() from exc
    try:
        return _record(sessions, box, pending, provider, token, identity.address)
    except IntegrityError:  # a concurrent callback for the same address committed first
        raise CallbackError(409, "address_already_connected", _taken(identity.address)) from None


def _record(
    sessions: sessionmaker[Session],
    box: SecretBox,
    pending: OAuthState,
    provider: OAuthProvider,
    token: Mapping[str, Any],
    address: str,
) -> Connected:
    """Create or reconnect the connection with its grant, in one transaction."""
    with sessions() as session, session.begin():
        principal = _caller(session, pending)
        try:
            if pending.connection_id is not None:
                conn = _reconnect(session, principal, pending, address)
                reconnected = True
            else:
                conn = conns.create_connection(
                    session=session,
                    principal=principal,
                    box=box,
                    address=address,
                    kind=pending.kind,
                    user_id=pending.user_id,
                    inbox_id=pending.inbox_id,
                    proven_by_login=True,
                )
                conn.imap_since = pending.imap_since
                reconnected = False
        except Conflict as exc:
            raise CallbackError(409, exc.code, _taken(address)) from None
        except (NotFound, Forbidden, Invalid) as exc:
            raise CallbackError(exc.status, exc.code, f"{exc}. Nothing was connected.") from None
        _use_provider(session, conn, provider)
        save_grant(session, box, conn.id, provider, token)
        session.flush()
        return Connected(conn.id, conn.address, conn.kind, provider.name, reconnected)


def _take_state(sessions: sessionmaker[Session], state: str | None) -> OAuthState:
    """Mark the state used — once, and only while valid — and return what it was for."""
    invalid = CallbackError(
        400,
        "oauth_state_invalid",
        "This sign-in link was already used, has expired or is unknown. "
        "Start connecting again from inboxlog.",
    )
    if not state or len(state) > 512:
        raise invalid
    digest, now = hash_token(state), utcnow()
    with sessions() as session, session.begin():
        taken = session.execute(
            sa.update(OAuthState)
            .where(
                OAuthState.state_hash == digest,
                OAuthState.used_at.is_(None),
                OAuthState.expires_at > now,
            )
            .values(used_at=now)
        )
        if rowcount(taken) != 1:
            raise invalid
        pending = session.scalars(
            sa.select(OAuthState).where(OAuthState.state_hash == digest)
        ).one()
        session.expunge(pending)
        return pending


def _exchange(
    client: OAuth2Client, provider: OAuthProvider, code: str, verifier: str
) -> dict[str, Any]:
    try:
        token = client.fetch_token(
            provider.token_url,
            grant_type="authorization_code",
            code=code,
            code_verifier=verifier,
        )
    except OAuthError as exc:
        refusal = classify_refusal(str(exc.error or ""), exc.description)
        if refusal.admin:
            sentence = refusal.exception().sentence
            raise CallbackError(400, "oauth_app_misconfigured", sentence) from None
        raise CallbackError(
            400,
            "oauth_code_refused",
            "The provider refused to complete the sign-in. Start connecting again.",
        ) from None
    except (httpx.HTTPError, NetworkRefused, OSError, ValueError) as exc:
        raise _unavailable() from exc
    if not token.get("access_token"):
        raise CallbackError(502, "oauth_provider_unavailable", "The provider sent no access token.")
    return dict(token)


def _unavailable() -> CallbackError:
    return CallbackError(
        502,
        "oauth_provider_unavailable",
        "The provider could not be reached. Nothing was connected; please try again.",
    )


def _caller(session: Session, pending: OAuthState) -> Principal:
    """The user who asked, as they are now: still active, with their current role."""
    user = session.get(User, pending.caller_id)
    if user is None or not user.active or user.account_id != pending.account_id:
        raise CallbackError(
            403, "caller_inactive", "The user who started this connection can no longer do so."
        )
    return Principal(kind="user", account_id=user.account_id, user_id=user.id, role=user.role)


def _reconnect(
    session: Session, principal: Principal, pending: OAuthState, address: str
) -> Connection:
    assert pending.connection_id is not None
    conn = conns.get_connection(
        session=session, principal=principal, connection_id=pending.connection_id
    )
    conns.require_manager(session=session, principal=principal, conn=conn)
    if address != conn.address:
        raise CallbackError(
            409,
            "oauth_address_mismatch",
            f"You signed in as {address}, but this connection is for {conn.address}. "
            "Nothing was changed; sign in with that mailbox to reconnect it.",
        )
    return conn


def _use_provider(session: Session, conn: Connection, provider: OAuthProvider) -> None:
    """The connection signs in with ``provider`` from now on; a login proved the address."""
    conn.oauth_provider = provider.name
    conn.imap_host, conn.imap_port = provider.imap_host, provider.imap_port
    conn.imap_security, conn.imap_username = provider.imap_security, conn.address
    conn.imap_password_enc = None
    conn.smtp_host, conn.smtp_port = provider.smtp_host, provider.smtp_port
    conn.smtp_security, conn.smtp_username = provider.smtp_security, conn.address
    conn.smtp_password_enc = None
    conn.verified_at = conn.verified_at or utcnow()
    if conn.status != "active":
        conn.status = "pending"
    conn.last_error = None
    bump_config_version(session=session, account_id=conn.account_id)


def save_grant(
    session: Session,
    box: SecretBox,
    connection_id: int,
    provider: OAuthProvider,
    token: Mapping[str, Any],
) -> None:
    values = grant_values(box, token, utcnow(), refresh_token=None)
    grant = session.get(OAuthGrant, connection_id)
    if grant is None:
        session.add(OAuthGrant(connection_id=connection_id, provider=provider.name, **values))
        return
    grant.provider = provider.name
    for key, value in values.items():
        setattr(grant, key, value)
    grant.version += 1  # a refresh in flight over the old grant saves nothing
    grant.refreshing_by = grant.refreshing_until = grant.failing_since = None


def _taken(address: str) -> str:
    """The 409 page's words. Who holds the address is not said: whoever finishes the flow in
    the browser may not be the person who started it (the API's 409 names the holder, C3)."""
    return (
        f"{address} is already connected in this inboxlog account (by a user or a team inbox). "
        "Nothing was connected."
    )

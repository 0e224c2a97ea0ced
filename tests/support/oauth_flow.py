"""The browser's and the operator's side of an OAuth connection, for tests: provider variables
pointing at a LocalOAuthServer, following an authorization URL like a browser that consents,
and a grant obtained directly (for tests of the token keeper)."""

from __future__ import annotations

import secrets
import urllib.parse
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.models import Connection, OAuthGrant
from shared.networks import Networks
from shared.oauth.client import oauth_client
from shared.oauth.providers import OAuthProvider, providers_from_env
from shared.oauth.tokens import grant_values
from tests.support.oauth_server import LocalOAuthServer

LOOPBACK = Networks.parse("127.0.0.0/8")


def provider_env(
    server: LocalOAuthServer,
    *,
    name: str = "LOCAL",
    client_id: str,
    client_secret: str,
    imap_port: int = 143,
    id_token: bool = False,
    **over: str,
) -> dict[str, str]:
    """``INBOXLOG_OAUTH_<name>_…`` for a provider served by ``server`` with its IMAP at
    127.0.0.1:``imap_port`` (a private Dovecot); ``id_token``: the address comes from the ID
    token (JWKS) instead of userinfo, as with the Microsoft preset."""
    p = f"INBOXLOG_OAUTH_{name}_"
    env = {
        p + "CLIENT_ID": client_id,
        p + "CLIENT_SECRET": client_secret,
        p + "AUTHORIZE_URL": server.authorize_url,
        p + "TOKEN_URL": server.token_url,
        p + "SCOPES": "openid email mail offline_access",
        p + "IMAP_HOST": "127.0.0.1",
        p + "IMAP_PORT": str(imap_port),
        p + "IMAP_SECURITY": "none",
        p + "SMTP_HOST": "127.0.0.1",
        p + "SMTP_PORT": "587",
        p + "SMTP_SECURITY": "none",
    }
    if id_token:
        env[p + "JWKS_URL"] = server.jwks_url
    else:
        env[p + "USERINFO_URL"] = server.userinfo_url
    env.update({p + k: v for k, v in over.items()})
    return env


def register_client(server: LocalOAuthServer, redirect_uri: str) -> tuple[str, str]:
    client_id, secret = "inboxlog-" + secrets.token_hex(4), "cs-" + secrets.token_urlsafe(24)
    server.add_client(client_id, secret, [redirect_uri])
    return client_id, secret


def provider_from(env: dict[str, str], name: str = "local") -> OAuthProvider:
    return providers_from_env(env)[name]


def consent(authorize_url: str) -> str:
    """Open the authorization URL as a browser whose user consents (the server's queued
    answer): the callback URL the provider redirects to."""
    resp = httpx.get(authorize_url, follow_redirects=False, timeout=10)
    assert resp.status_code == 302, (resp.status_code, resp.text[:500])
    return resp.headers["location"]


def callback(callback_url: str) -> httpx.Response:
    return httpx.get(callback_url, follow_redirects=False, timeout=30)


def obtain_token(provider: OAuthProvider, redirect_uri: str) -> dict[str, Any]:
    """A grant for the server's next consent, through the code flow with PKCE."""
    verifier = secrets.token_urlsafe(48)
    with oauth_client(provider, allowed=LOOPBACK, redirect_uri=redirect_uri) as client:
        url, state = client.create_authorization_url(provider.authorize_url, code_verifier=verifier)
        back = urllib.parse.parse_qs(urllib.parse.urlsplit(consent(url)).query)
        assert back["state"] == [state]
        return dict(
            client.fetch_token(provider.token_url, code=back["code"][0], code_verifier=verifier)
        )


def store_grant(
    sessions: sessionmaker[Session],
    box: SecretBox,
    connection_id: int,
    provider: OAuthProvider,
    token: dict[str, Any],
    *,
    issued_at: datetime,
) -> None:
    """Make ``connection_id`` an OAuth connection of ``provider`` with this grant."""
    values = grant_values(box, token, issued_at, refresh_token=None)
    with sessions() as session, session.begin():
        session.execute(
            sa.update(Connection)
            .where(Connection.id == connection_id)
            .values(oauth_provider=provider.name, imap_password_enc=None)
        )
        session.add(OAuthGrant(connection_id=connection_id, provider=provider.name, **values))


def make_due(sessions: sessionmaker[Session], connection_id: int, now: datetime) -> None:
    """Age the stored access token: issued two hours before ``now``, expired one hour ago."""
    with sessions() as session, session.begin():
        session.execute(
            sa.update(OAuthGrant)
            .where(OAuthGrant.connection_id == connection_id)
            .values(issued_at=now - timedelta(hours=2), expires_at=now - timedelta(hours=1))
        )

"""The HTTP client for OAuth endpoints: TLS verified, bounded, and dialling only vetted addresses.

§6 Network safety covers OAuth endpoints too: the token URL is a place we send a client secret
and refresh tokens to, so it gets the IMAP servers' rule — resolved, checked after resolution,
at every connect, and only vetted addresses are dialled. httpcore takes its sockets from a
network backend; ours vets the name and hands the first vetted address to the standard backend,
while TLS (SNI, certificate checks) keeps using the name from the URL.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from authlib.integrations.httpx_client import OAuth2Client

from shared.netsafety import HostNotFound, Resolver, resolve_allowed
from shared.networks import Networks
from shared.oauth.providers import OAuthProvider

__all__ = ["OAuth2Client", "oauth_client"]

# A token request holds up a login (and other processes waiting for the same refresh).
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# The most a provider's JSON answer may be: a token response or userinfo is a few KB.
MAX_RESPONSE_BYTES = 256 * 1024


class VettedBackend(httpcore.SyncBackend):
    def __init__(self, allowed: Networks, resolver: Resolver) -> None:
        self._allowed, self._resolver = allowed, resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception = HostNotFound("no address")
        for _family, sockaddr in resolve_allowed(host, port, self._allowed, self._resolver):
            try:
                return super().connect_tcp(
                    str(sockaddr[0]), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        raise last


class VettedTransport(httpx.HTTPTransport):
    def __init__(self, allowed: Networks, resolver: Resolver, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # The one change to httpx's own transport: its pool dials through our backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=10,
            network_backend=VettedBackend(allowed, resolver),
        )


def oauth_client(
    provider: OAuthProvider,
    *,
    allowed: Networks,
    redirect_uri: str | None = None,
    ca_file: str | None = None,
    resolver: Resolver = socket.getaddrinfo,
) -> OAuth2Client:
    """Authlib's OAuth 2 client for ``provider`` (PKCE S256), over the vetted transport."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return OAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        scope=provider.scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        # Authlib refuses to use a token within ``leeway`` seconds of its expiry (60 by
        # default): a provider's 40-second token would be unusable the moment it arrives.
        # Our refresh schedule (shared/oauth/tokens.py) decides when a token is too old.
        leeway=0,
        transport=VettedTransport(allowed, resolver, ctx),
        timeout=TIMEOUT,
        trust_env=False,
        follow_redirects=False,
    )

"""What a session signs in with: the stored password, or a fresh OAuth access token (§10)."""

from __future__ import annotations

from dataclasses import replace

from shared.oauth.errors import TokenUnavailable
from shared.oauth.tokens import AccessToken, TokenKeeper
from worker.imap.client import ImapSettings
from worker.imap.snapshot import Snapshot


def signin_settings(
    connection_id: int, snap: Snapshot, tokens: TokenKeeper | None
) -> tuple[ImapSettings, AccessToken | None]:
    """The settings to log in with and, for OAuth, the token they carry (its ``refresh_at``:
    when the session must sign in again). Raises ReauthRequired / TokenUnavailable."""
    if snap.oauth_provider is None:
        return snap.settings, None
    provider = tokens.providers.get(snap.oauth_provider) if tokens else None
    if tokens is None or provider is None:
        # This process lacks the provider (a configuration change rolling out?): retried,
        # and no status changes — another poller, or this one restarted, may have it.
        raise TokenUnavailable(f"the OAuth provider {snap.oauth_provider!r} is not configured here")
    token = tokens.access_token(connection_id)
    settings = replace(snap.settings, password=token.value, auth="oauth", sasl=provider.sasl)
    return settings, token

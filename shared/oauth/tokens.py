"""A connection's access token, refreshed before it expires, one refresh at a time (§10).

Every process asks :meth:`TokenKeeper.access_token`. While the stored token is fresh it is
returned as is. When it is due, one process takes the grant's refresh lease (a conditional
UPDATE: atomic on every database, held for no transaction while the provider is asked) and
refreshes; the others wait for its result and use it. A rotated refresh token is saved in the
same transaction as the access token it came with, over exactly the version that was read.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from authlib.integrations.base_client import OAuthError
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import rowcount
from shared.db.models import Connection, OAuthGrant
from shared.netsafety import NetworkRefused, Resolver
from shared.networks import Networks
from shared.oauth.client import oauth_client
from shared.oauth.errors import (
    UNAVAILABLE_GRACE_SECONDS,
    ReauthRequired,
    TokenUnavailable,
    classify_refusal,
)
from shared.oauth.providers import OAuthProvider

log = logging.getLogger("inboxlog.oauth")

LEEWAY_SECONDS = 60.0
# Longer than a token request may take (connect 5 s + 10 s), so a live refresher keeps it.
LEASE_SECONDS = 30.0
WAIT_STEP_SECONDS = 0.1
DEFAULT_LIFETIME_SECONDS = 3600  # a token response without expires_in
# OAuth error codes that mean "not now" rather than a verdict on the grant.
TEMPORARY_ERRORS = ("temporarily_unavailable", "server_error", "slow_down")


def refresh_due(
    issued_at: datetime, expires_at: datetime, leeway: float = LEEWAY_SECONDS
) -> datetime:
    """When to refresh: ``leeway`` before expiry; a token living less than twice the leeway
    at half its life."""
    life = expires_at - issued_at
    if life < timedelta(seconds=2 * leeway):
        return issued_at + life / 2
    return expires_at - timedelta(seconds=leeway)


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: datetime
    refresh_at: datetime  # a session using it should sign in again before this


def grant_values(
    box: SecretBox, token: Mapping[str, Any], now: datetime, *, refresh_token: str | None
) -> dict[str, Any]:
    """The oauth_grants columns for a token response; ``refresh_token``: the one to keep when
    the response brought none (providers that do not rotate)."""
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise ValueError("the token response has no access_token")
    try:
        lifetime = int(token.get("expires_in") or DEFAULT_LIFETIME_SECONDS)
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME_SECONDS
    rotated = token.get("refresh_token")
    refresh = rotated if isinstance(rotated, str) and rotated else refresh_token
    return {
        "access_token_enc": box.encrypt(access),
        "refresh_token_enc": box.encrypt(refresh) if refresh else None,
        "issued_at": now,
        "expires_at": now + timedelta(seconds=max(1, lifetime)),
        "updated_at": now,
    }


class TokenKeeper:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        box: SecretBox,
        providers: Mapping[str, OAuthProvider],
        *,
        allowed: Networks,
        ca_file: str | None = None,
        resolver: Resolver = socket.getaddrinfo,
        clock: Callable[[], datetime] = utcnow,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.sessions, self.box, self.providers = sessions, box, providers
        self.allowed, self.ca_file, self.resolver = allowed, ca_file, resolver
        self.clock, self.lease_seconds = clock, lease_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def access_token(self, connection_id: int) -> AccessToken:
        """A token valid until at least its ``refresh_at``; raises ReauthRequired (stop until
        reconnected) or TokenUnavailable (retry later)."""
        give_up = time.monotonic() + self.lease_seconds + 5
        while True:
            with self.sessions() as session:
                grant = session.get(OAuthGrant, connection_id)
                if grant is None:
                    raise ReauthRequired("the connection has no OAuth grant. Reconnect it.")
                status = session.scalar(
                    sa.select(Connection.status).where(Connection.id == connection_id)
                )
                if status == "reauth_required":  # refused once: nothing more until reconnected
                    raise ReauthRequired("the provider refused the grant. Reconnect the mailbox.")
                session.expunge(grant)
            now = self.clock()
            due = refresh_due(grant.issued_at, grant.expires_at)
            if now < due:
                return AccessToken(self.box.decrypt(grant.access_token_enc), grant.expires_at, due)
            if grant.refresh_token_enc is None:
                raise self._refused(
                    connection_id,
                    ReauthRequired("the provider gave no refresh token. Reconnect the mailbox."),
                )
            if self._take_lease(connection_id, grant.version, now):
                fresh = self._refresh(connection_id, grant, now)
                if fresh is not None:
                    return fresh
                continue  # the grant changed under us (a reconnect): start over
            if time.monotonic() > give_up:
                raise TokenUnavailable("another process's token refresh did not finish")
            time.sleep(WAIT_STEP_SECONDS)

    def invalidate(self, connection_id: int, token: AccessToken) -> None:
        """The mail server refused ``token``: the next :meth:`access_token` refreshes (unless
        another process already replaced it), so a clock skew or an early revocation costs
        one refresh, not a reconnect."""
        with self.sessions() as session, session.begin():
            session.execute(
                sa.update(OAuthGrant)
                .where(
                    OAuthGrant.connection_id == connection_id,
                    OAuthGrant.expires_at == token.expires_at,
                )
                .values(expires_at=OAuthGrant.issued_at)
            )

    # -- the refresh ----------------------------------------------------------------------
    def _take_lease(self, connection_id: int, version: int, now: datetime) -> bool:
        with self.sessions() as session, session.begin():
            result = session.execute(
                sa.update(OAuthGrant)
                .where(
                    OAuthGrant.connection_id == connection_id,
                    OAuthGrant.version == version,
                    sa.or_(
                        OAuthGrant.refreshing_until.is_(None), OAuthGrant.refreshing_until < now
                    ),
                )
                .values(
                    refreshing_by=self.owner,
                    refreshing_until=now + timedelta(seconds=self.lease_seconds),
                )
            )
            return rowcount(result) == 1

    def _refresh(self, connection_id: int, grant: OAuthGrant, now: datetime) -> AccessToken | None:
        provider = self.providers.get(grant.provider)
        if provider is None:  # this process lacks the provider (a config change rolling out?)
            self._release(connection_id, grant.version)
            raise TokenUnavailable(
                f"the OAuth provider {grant.provider!r} is not configured in this process"
            )
        assert grant.refresh_token_enc is not None
        refresh_token = self.box.decrypt(grant.refresh_token_enc)
        try:
            with oauth_client(
                provider, allowed=self.allowed, ca_file=self.ca_file, resolver=self.resolver
            ) as client:
                token = client.refresh_token(provider.token_url, refresh_token=refresh_token)
            values = grant_values(self.box, token, now, refresh_token=refresh_token)
        except OAuthError as exc:
            if exc.error in TEMPORARY_ERRORS:
                raise self._unavailable(connection_id, grant, now) from None
            refusal = classify_refusal(str(exc.error or ""), exc.description)
            raise self._refused(connection_id, refusal.exception(), grant.version) from None
        except (httpx.HTTPError, NetworkRefused, OSError, ValueError):
            # Network, TLS, 5xx, a non-JSON answer: not a verdict on the grant.
            raise self._unavailable(connection_id, grant, now) from None
        with self.sessions() as session, session.begin():
            saved = session.execute(
                sa.update(OAuthGrant)
                .where(
                    OAuthGrant.connection_id == connection_id,
                    OAuthGrant.version == grant.version,
                )
                .values(
                    **values,
                    version=OAuthGrant.version + 1,
                    refreshes=OAuthGrant.refreshes + 1,
                    refreshing_by=None,
                    refreshing_until=None,
                    failing_since=None,
                )
            )
            if rowcount(saved) != 1:
                return None
        log.info("connection=%s access token refreshed", connection_id)
        return AccessToken(
            self.box.decrypt(values["access_token_enc"]),
            values["expires_at"],
            refresh_due(values["issued_at"], values["expires_at"]),
        )

    def _refused(
        self, connection_id: int, exc: ReauthRequired, version: int | None = None
    ) -> ReauthRequired:
        """The grant is refused: the connection waits for a reconnect (§10). ``version``: the
        grant the refusal was about — a reconnect saved since then is left alone."""
        with self.sessions() as session, session.begin():
            released = session.execute(
                sa.update(OAuthGrant)
                .where(*self._same_grant(connection_id, version))
                .values(refreshing_by=None, refreshing_until=None)
            )
            if version is None or rowcount(released) == 1:
                session.execute(
                    sa.update(Connection)
                    .where(Connection.id == connection_id)
                    .values(status="reauth_required", last_error=exc.last_error)
                )
        log.warning(
            "connection=%s OAuth grant refused (%s); waiting for a reconnect",
            connection_id,
            "admin configuration" if exc.admin else "reconnect",
        )
        return exc

    def _release(self, connection_id: int, version: int) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                sa.update(OAuthGrant)
                .where(*self._same_grant(connection_id, version))
                .values(refreshing_by=None, refreshing_until=None)
            )

    def _same_grant(self, connection_id: int, version: int | None) -> list[Any]:
        """The grant row as it was read, still leased by us (when a version is given)."""
        where: list[Any] = [OAuthGrant.connection_id == connection_id]
        if version is not None:
            where += [OAuthGrant.version == version, OAuthGrant.refreshing_by == self.owner]
        return where

    def _unavailable(
        self, connection_id: int, grant: OAuthGrant, now: datetime
    ) -> TokenUnavailable:
        """The provider could not be asked: release the lease, remember since when it fails,
        and turn the connection ``error`` once that lasts past the grace period."""
        since = grant.failing_since or now
        persisting = (now - since).total_seconds() > UNAVAILABLE_GRACE_SECONDS
        exc = TokenUnavailable(
            "the provider's token endpoint has not answered for more than 15 minutes; retrying"
            if persisting
            else "the provider's token endpoint is not answering; retrying",
            persisting=persisting,
        )
        with self.sessions() as session, session.begin():
            released = session.execute(
                sa.update(OAuthGrant)
                .where(*self._same_grant(connection_id, grant.version))
                .values(
                    refreshing_by=None,
                    refreshing_until=None,
                    failing_since=sa.func.coalesce(OAuthGrant.failing_since, now),
                )
            )
            if persisting and rowcount(released) == 1:
                session.execute(
                    sa.update(Connection)
                    .where(Connection.id == connection_id)
                    .values(status="error", last_error=exc.last_error)
                )
        log.warning("connection=%s token refresh failed: provider unavailable", connection_id)
        return exc

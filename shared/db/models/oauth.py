"""OAuth grants of connections and the pending authorizations that create them (§10)."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow


class OAuthGrant(Base):
    """A connection's tokens, Fernet-encrypted (C6). ``version`` moves with every save, so a
    refresh saves only over what it read; ``refreshing_*`` is the lease that makes one process
    refresh while the others wait for its result."""

    __tablename__ = "oauth_grants"

    connection_id: Mapped[int] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(sa.String(64))
    access_token_enc: Mapped[str] = mapped_column(sa.Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(sa.Text)
    issued_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    version: Mapped[int] = mapped_column(default=0)
    refreshes: Mapped[int] = mapped_column(default=0)  # token requests since connected
    refreshing_by: Mapped[str | None] = mapped_column(sa.String(100))
    refreshing_until: Mapped[datetime | None] = mapped_column()
    # The start of an unbroken run of network errors / 5xx from the provider (§10: ``error``
    # only once it lasts past 15 minutes).
    failing_since: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OAuthState(Base):
    """An authorization in progress: single-use, bound to the caller, valid 10 minutes. Only
    the state's SHA-256 is stored (it is a capability); the PKCE verifier is encrypted."""

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    state_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    caller_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(16))
    user_id: Mapped[int | None] = mapped_column()
    inbox_id: Mapped[int | None] = mapped_column()
    connection_id: Mapped[int | None] = mapped_column()
    imap_since: Mapped[date | None] = mapped_column(sa.Date)
    code_verifier_enc: Mapped[str] = mapped_column(sa.Text)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

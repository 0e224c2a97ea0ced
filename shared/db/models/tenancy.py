"""Accounts (tenants), their users with log/track defaults, and hashed API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    # Local parts of the intake addresses; the domain comes from INBOXLOG_LOGGING_DOMAIN.
    bcc_token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    forward_token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bumped whenever users, connections, inboxes or settings change: workers cache the
    # account's facts per version instead of re-reading them for every message.
    config_version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "email"),
        sa.CheckConstraint("role in ('admin', 'member')", name="role"),
        # GET /v1/users, newest first, by keyset.
        sa.Index("ix_users_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(sa.String(320))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(16), default="member")
    active: Mapped[bool] = mapped_column(default=True)
    default_log: Mapped[bool] = mapped_column(default=True)
    default_track: Mapped[bool] = mapped_column(default=True)
    never_log: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

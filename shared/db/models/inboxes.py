"""Team inboxes, their members, ordered routing rules and round-robin cursors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow


class TeamInbox(Base):
    __tablename__ = "team_inboxes"
    # GET /v1/inboxes, newest first, by keyset.
    __table_args__ = (sa.Index("ix_team_inboxes_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(200))
    sender_name: Mapped[str | None] = mapped_column(sa.String(200))
    forward_token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboxMember(Base):
    __tablename__ = "inbox_members"
    # A member's inboxes (the primary key leads with the inbox).
    __table_args__ = (sa.Index("ix_inbox_members_user_id", "user_id", "inbox_id"),)

    inbox_id: Mapped[int] = mapped_column(
        sa.ForeignKey("team_inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class RoutingRule(Base):
    __tablename__ = "routing_rules"
    __table_args__ = (sa.UniqueConstraint("inbox_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    inbox_id: Mapped[int] = mapped_column(sa.ForeignKey("team_inboxes.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column()
    name: Mapped[str] = mapped_column(sa.String(200))
    conditions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    action: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)


class RoundRobinCursor(Base):
    """How many conversations each user got from one round-robin rule (locked row per rule)."""

    __tablename__ = "round_robin_cursors"

    inbox_id: Mapped[int] = mapped_column(
        sa.ForeignKey("team_inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    rule_key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)

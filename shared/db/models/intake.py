"""Messages taken in (raw bytes and envelope), the decision made on each, and failures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column

from shared.db.base import Base, utcnow


class StoredMessage(Base):
    """The source of truth for intake: ``stored -> processing -> done | failed``."""

    __tablename__ = "stored_messages"
    __table_args__ = (
        # An IMAP message is stored once per folder generation, however often it is fetched.
        sa.UniqueConstraint("connection_id", "folder", "uidvalidity", "uid"),
        sa.Index("ix_stored_messages_status_updated", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(sa.String(16))
    inbox_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("team_inboxes.id", ondelete="SET NULL")
    )
    connection_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="SET NULL")
    )
    # Envelope first: SMTP MAIL FROM / RCPT TO and the IMAP folder/UID live in columns.
    envelope_from: Mapped[str | None] = mapped_column(sa.String(320))
    envelope_to: Mapped[list[Any]] = mapped_column(default=list)
    client_address: Mapped[str | None] = mapped_column(sa.String(64))
    folder: Mapped[str | None] = mapped_column(sa.String(500))
    # "sent" for the \\Sent special-use folder (outgoing replies), else "inbox".
    folder_role: Mapped[str | None] = mapped_column(sa.String(16))
    uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    uid: Mapped[int | None] = mapped_column(sa.BigInteger)
    raw: Mapped[bytes | None] = deferred(mapped_column(sa.LargeBinary))
    raw_size: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(sa.String(16), default="stored")
    attempts: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()


class Decision(Base):
    """Exactly one per message taken in: the answer to "why was (or wasn't) this logged?"."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    stored_message_id: Mapped[int] = mapped_column(
        sa.ForeignKey("stored_messages.id", ondelete="CASCADE"), unique=True
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(sa.String(16))
    message_id: Mapped[str | None] = mapped_column(sa.String(998))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    codes: Mapped[list[Any]] = mapped_column(default=list)
    participants: Mapped[list[Any]] = mapped_column(default=list)
    email_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("logged_emails.id", ondelete="SET NULL")
    )
    acting_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    # Set for personal-connection mail: only the connection's owner sees the decision (C4).
    connection_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="SET NULL")
    )
    private_to_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )


class Failure(Base):
    """A permanent processing failure; the raw message stays until a retry succeeds."""

    __tablename__ = "failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    stored_message_id: Mapped[int] = mapped_column(
        sa.ForeignKey("stored_messages.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(sa.String(32))
    error: Mapped[str] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()

"""Outbound mail (§9): the durable outbox, its per-recipient copies, tracking links and the
events they record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column

from shared.db.base import Base, utcnow


class Outbox(Base):
    """One message to send: ``queued → sending → sent | retrying → failed``. The message is
    built once and stored here before the API answers 202."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The delivery sweeper: what is due (queued/retrying by time) or stuck in sending.
        sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
        # A delivery takes the connection's other queued entries over the same session.
        sa.Index("ix_outbox_connection_status", "connection_id", "status"),
        # The IMAP copy of a message sent with log: false is looked up by its Message-ID.
        sa.Index("ix_outbox_account_message", "account_id", "message_id"),
        # An email's outbox entry, through its decision's stored message (the email view).
        sa.Index("ix_outbox_stored_message_id", "stored_message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    connection_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="SET NULL")
    )
    sender_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column()
    message_id: Mapped[str] = mapped_column(sa.String(255))
    mail_from: Mapped[str] = mapped_column(sa.String(320))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    # [{address, name, field: to|cc|bcc}]
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    # The message as logged (with its Bcc header; never sent as is).
    raw: Mapped[bytes] = deferred(mapped_column(sa.LargeBinary, nullable=False))
    html: Mapped[bool] = mapped_column(default=False)
    log: Mapped[bool] = mapped_column(default=True)
    track: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    # The worker delivering it renews this; a stale claim in ``sending`` is taken back.
    claimed_until: Mapped[datetime | None] = mapped_column()
    stored_message_id: Mapped[int | None] = mapped_column()  # the logged copy (source sent)
    # The mailbox's Sent folder (save_sent): found (the provider filed it), appended, failed.
    sent_folder: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()


class OutboxCopy(Base):
    """What one SMTP transaction delivers: a tracked recipient's own copy, or the untracked
    copy for everyone else. ``accepted_at``: the upstream answered 250 for it."""

    __tablename__ = "outbox_copies"

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(
        sa.ForeignKey("outbox.id", ondelete="CASCADE"), index=True
    )
    recipients: Mapped[list[Any]] = mapped_column(default=list)  # envelope addresses
    tracked: Mapped[bool] = mapped_column(default=False)
    raw: Mapped[bytes] = deferred(mapped_column(sa.LargeBinary, nullable=False))
    status: Mapped[str] = mapped_column(
        sa.String(16), default="pending"
    )  # pending|accepted|refused
    reply: Mapped[str | None] = mapped_column(sa.Text)
    accepted_at: Mapped[datetime | None] = mapped_column()


class TrackingLink(Base):
    """An opaque token mapped to (copy, recipient, url): an open pixel (url NULL) or a link."""

    __tablename__ = "tracking_links"
    __table_args__ = (sa.Index("ix_tracking_links_copy_id", "copy_id"),)  # a copy's links

    token: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    outbox_id: Mapped[int] = mapped_column(
        sa.ForeignKey("outbox.id", ondelete="CASCADE"), index=True
    )
    copy_id: Mapped[int] = mapped_column(sa.ForeignKey("outbox_copies.id", ondelete="CASCADE"))
    recipient: Mapped[str] = mapped_column(sa.String(320))
    kind: Mapped[str] = mapped_column(sa.String(8))  # open | click
    url: Mapped[str | None] = mapped_column(sa.Text)


class TrackingEvent(Base):
    """One open or click, human or machine (with the reason); kept either way."""

    __tablename__ = "tracking_events"
    __table_args__ = (
        sa.Index("ix_tracking_events_outbox_id", "outbox_id", "id"),
        sa.Index("ix_tracking_events_copy_at", "copy_id", "at"),  # a copy's recent clicks
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(sa.ForeignKey("outbox.id", ondelete="CASCADE"))
    copy_id: Mapped[int] = mapped_column()
    recipient: Mapped[str] = mapped_column(sa.String(320))
    type: Mapped[str] = mapped_column(sa.String(8))
    url: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    machine: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(sa.String(32))

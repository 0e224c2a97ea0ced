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
        # Retention (§6): the rows that still hold raw bytes, oldest first.
        sa.Index(
            "ix_stored_messages_raw_received",
            "received_at",
            postgresql_where=sa.text("raw IS NOT NULL"),
            sqlite_where=sa.text("raw IS NOT NULL"),
        ),
        # The backlog alone (stored or processing): /metrics and status count it and find its
        # oldest on every scrape, at a cost that grows with the backlog, not with the table.
        sa.Index(
            "ix_stored_messages_backlog",
            "status",
            "account_id",
            "received_at",
            postgresql_where=sa.text("status IN ('stored', 'processing')"),
            sqlite_where=sa.text("status IN ('stored', 'processing')"),
        ),
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
    # Claims of this row in a batch of its own. A message that stops its worker (a time limit,
    # a crash) is retried alone; three unfinished attempts alone make it a failure (§6).
    solo_attempts: Mapped[int] = mapped_column(default=0)
    # What the gateway found about the sender of this copy (envelope first: never a header):
    # "refused" (sender verification failed for this route; recorded, never dropped),
    # "authenticated" / "unauthenticated" (team mail by SMTP with an internal From: DKIM
    # aligned or a trusted Authentication-Results pass, or not). NULL: nothing to say.
    sender_verdict: Mapped[str | None] = mapped_column(sa.String(16))
    # Why the last attempt stopped without finishing ("timeout"), for the failure's code.
    last_stop: Mapped[str | None] = mapped_column(sa.String(16))
    # Mail sent through inboxlog (source "sent", §9): the user who sent it.
    acting_user_id: Mapped[int | None] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The task that holds the row in processing (a Celery task id): only that task — delivered
    # again after its worker died — or anyone once the claim went stale may take it (§6).
    claimed_by: Mapped[str | None] = mapped_column(sa.String(64))
    # Renewed by the worker processing the row (its claim); the sweeper takes back only rows
    # whose claim went stale.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()


class Decision(Base):
    """Exactly one per message taken in: the answer to "why was (or wasn't) this logged?"."""

    __tablename__ = "decisions"
    __table_args__ = (
        # GET /v1/decisions, newest first, under C4: (account, not private) and (account,
        # private to me) are two ranges of this index, each read in id order.
        sa.Index("ix_decisions_account_private_id", "account_id", "private_to_user_id", "id"),
        # … with ?outcome= / ?source=: the same ranges, one filter value at a time.
        sa.Index(
            "ix_decisions_account_private_outcome_id",
            "account_id",
            "private_to_user_id",
            "outcome",
            "id",
        ),
        sa.Index(
            "ix_decisions_account_private_source_id",
            "account_id",
            "private_to_user_id",
            "source",
            "id",
        ),
        # A member's non-private decisions: those of each of their inboxes, and their own acts
        # (most of which are private: personal mail; the range is the non-private ones).
        sa.Index("ix_decisions_inbox_private_id", "inbox_id", "private_to_user_id", "id"),
        sa.Index("ix_decisions_acting_private_id", "acting_user_id", "private_to_user_id", "id"),
        # An email's decisions (its outbox entry; the email's deletion sets email_id null).
        sa.Index("ix_decisions_email_id", "email_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
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
    # The stored message's team inbox (copied: a member sees the decisions of their inboxes).
    inbox_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("team_inboxes.id", ondelete="SET NULL")
    )
    # Team mail: how the message was threaded ({how, conversation_id}) and, for a new
    # conversation, the routing trace (which rule fired, and why each earlier one did not).
    thread: Mapped[dict[str, Any] | None] = mapped_column()
    routing: Mapped[dict[str, Any] | None] = mapped_column()


class Failure(Base):
    """A permanent processing failure; the raw message stays until a retry succeeds."""

    __tablename__ = "failures"
    __table_args__ = (
        # GET /v1/ops/failures newest first: every account's / one account's unresolved ones
        # (partial: few), and one account's all.
        sa.Index(
            "ix_failures_open",
            "id",
            postgresql_where=sa.text("resolved_at IS NULL"),
            sqlite_where=sa.text("resolved_at IS NULL"),
        ),
        sa.Index(
            "ix_failures_account_open",
            "account_id",
            "id",
            postgresql_where=sa.text("resolved_at IS NULL"),
            sqlite_where=sa.text("resolved_at IS NULL"),
        ),
        sa.Index("ix_failures_account_id_id", "account_id", "id"),
    )

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

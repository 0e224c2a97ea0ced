"""Logged emails with participants, sources and associations, and team-inbox conversations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column

from shared.db.base import Base, utcnow


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        sa.CheckConstraint("status in ('open', 'closed')", name="status"),
        # Subject threading (§5): one index range per (inbox, subject, external participant).
        sa.Index(
            "ix_conversations_inbox_thread",
            "inbox_id",
            "thread_subject",
            "external_address",
            "last_message_at",
        ),
        # GET /v1/inboxes/{id}/conversations, latest message first, by keyset: one index per
        # filter (none, status, assignee).
        sa.Index("ix_conversations_inbox_last", "inbox_id", "last_message_at", "id"),
        sa.Index(
            "ix_conversations_inbox_status_last", "inbox_id", "status", "last_message_at", "id"
        ),
        sa.Index(
            "ix_conversations_inbox_assignee_last",
            "inbox_id",
            "assignee_id",
            "last_message_at",
            "id",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(sa.ForeignKey("team_inboxes.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(sa.Text, default="")
    thread_subject: Mapped[str] = mapped_column(sa.String(500), default="")
    # The external participant used for subject threading (§5).
    external_address: Mapped[str | None] = mapped_column(sa.String(320))
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    assignee_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    contact_ids: Mapped[list[Any]] = mapped_column(default=list)
    message_count: Mapped[int] = mapped_column(default=0)
    last_message_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoggedEmail(Base):
    """One per message per account: the identity key is a database constraint."""

    __tablename__ = "logged_emails"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "identity"),
        sa.Index("ix_logged_emails_account_message_id", "account_id", "message_id"),
        # Timelines are read from their links' own indexes (EmailContact, EmailCompany).
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    identity: Mapped[str] = mapped_column(sa.String(64))
    message_id: Mapped[str | None] = mapped_column(sa.String(998))
    in_reply_to: Mapped[str | None] = mapped_column(sa.String(998))
    references: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(sa.Text, default="")
    from_address: Mapped[str | None] = mapped_column(sa.String(320))
    from_name: Mapped[str | None] = mapped_column(sa.String(500))
    to: Mapped[list[Any]] = mapped_column(default=list)
    cc: Mapped[list[Any]] = mapped_column(default=list)
    date: Mapped[datetime | None] = mapped_column()
    direction: Mapped[str] = mapped_column(sa.String(16))
    kind: Mapped[str] = mapped_column(sa.String(16), default="normal")
    bounce_of_message_id: Mapped[str | None] = mapped_column(sa.String(998))
    forwarded_by_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    logged_by_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    visibility: Mapped[str] = mapped_column(sa.String(16), default="account")
    conversation_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    snippet: Mapped[str] = mapped_column(sa.Text, default="")
    text: Mapped[str] = deferred(mapped_column(sa.Text, default=""))
    html: Mapped[str | None] = deferred(mapped_column(sa.Text))
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    stored_message_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("stored_messages.id", ondelete="SET NULL")
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailParticipant(Base):
    __tablename__ = "email_participants"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_id: Mapped[int] = mapped_column(
        sa.ForeignKey("logged_emails.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(sa.String(8))
    address: Mapped[str] = mapped_column(sa.String(320), index=True)
    name: Mapped[str | None] = mapped_column(sa.String(500))


class EmailSource(Base):
    __tablename__ = "email_sources"
    __table_args__ = (sa.UniqueConstraint("email_id", "stored_message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email_id: Mapped[int] = mapped_column(sa.ForeignKey("logged_emails.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(sa.String(16))
    stored_message_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("stored_messages.id", ondelete="SET NULL")
    )
    connection_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationEmail(Base):
    """A logged email shown in a team conversation. One logged email per message per account,
    but every team inbox that takes the message in shows it (§4): one row per inbox.
    ``LoggedEmail.conversation_id`` keeps the first, the one the email API names."""

    __tablename__ = "conversation_emails"

    conversation_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    email_id: Mapped[int] = mapped_column(
        sa.ForeignKey("logged_emails.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class EmailContact(Base):
    """An email on a contact's timeline, with the email's sort key (§7 order: ``email_sort_at``
    is coalesce(date, received_at)) so that a timeline page is a range of one index."""

    __tablename__ = "email_contacts"
    __table_args__ = (
        sa.Index(
            "ix_email_contacts_timeline",
            "contact_id",
            "email_sort_at",
            "email_received_at",
            "email_id",
        ),
    )

    email_id: Mapped[int] = mapped_column(
        sa.ForeignKey("logged_emails.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(
        sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    email_sort_at: Mapped[datetime] = mapped_column()
    email_received_at: Mapped[datetime] = mapped_column()


class EmailCompany(Base):
    """An email on a company's timeline, with its sort key as in :class:`EmailContact`."""

    __tablename__ = "email_companies"
    __table_args__ = (
        sa.Index(
            "ix_email_companies_timeline",
            "company_id",
            "email_sort_at",
            "email_received_at",
            "email_id",
        ),
    )

    email_id: Mapped[int] = mapped_column(
        sa.ForeignKey("logged_emails.id", ondelete="CASCADE"), primary_key=True
    )
    company_id: Mapped[int] = mapped_column(
        sa.ForeignKey("companies.id", ondelete="CASCADE"), primary_key=True
    )
    email_sort_at: Mapped[datetime] = mapped_column()
    email_received_at: Mapped[datetime] = mapped_column()

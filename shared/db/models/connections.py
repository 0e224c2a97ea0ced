"""Connected addresses (personal or team) with IMAP settings, leases and per-folder cursors."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (
        # C1: an address is connected at most once per account (addresses stored lowercase).
        sa.UniqueConstraint("account_id", "address"),
        sa.Index("ix_connections_account_id_id", "account_id", "id"),  # the list, newest first
        sa.CheckConstraint(
            "(kind = 'personal' AND user_id IS NOT NULL AND inbox_id IS NULL)"
            " OR (kind = 'team' AND inbox_id IS NOT NULL AND user_id IS NULL)",
            name="kind_owner",
        ),
        # C2: a team connection cannot be used for meetings.
        sa.CheckConstraint("NOT (kind = 'team' AND meetings)", name="team_no_meetings"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(sa.String(320))
    kind: Mapped[str] = mapped_column(sa.String(16))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    inbox_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("team_inboxes.id", ondelete="CASCADE")
    )
    meetings: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    imap_host: Mapped[str | None] = mapped_column(sa.String(255))
    imap_port: Mapped[int | None] = mapped_column()
    imap_security: Mapped[str | None] = mapped_column(sa.String(16))
    imap_username: Mapped[str | None] = mapped_column(sa.String(320))
    # Fernet ciphertext; never returned by the API or logged (C6).
    imap_password_enc: Mapped[str | None] = mapped_column(sa.Text)
    # Outbound SMTP (§9): the server the connection sends through (username/password default
    # to the IMAP ones; an OAuth connection uses its provider's server and token).
    smtp_host: Mapped[str | None] = mapped_column(sa.String(255))
    smtp_port: Mapped[int | None] = mapped_column()
    smtp_security: Mapped[str | None] = mapped_column(sa.String(16))
    smtp_username: Mapped[str | None] = mapped_column(sa.String(320))
    smtp_password_enc: Mapped[str | None] = mapped_column(sa.Text)
    save_sent: Mapped[str] = mapped_column(sa.String(8), default="auto")
    # The OAuth provider (§10) the mailbox signs in with; None: the IMAP password. The tokens
    # live in oauth_grants.
    oauth_provider: Mapped[str | None] = mapped_column(sa.String(64))
    imap_folders: Mapped[list[Any] | None] = mapped_column()
    imap_since: Mapped[date | None] = mapped_column(sa.Date)
    # A requested backfill (POST /sync, `inboxlog backfill`) the poller has not run yet.
    backfill_since: Mapped[date | None] = mapped_column(sa.Date)
    sync_requested_at: Mapped[datetime | None] = mapped_column()
    last_sync_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    # C7: when the address was proven the owner's (a successful login to the mailbox, or an
    # admin's confirmation). A personal connection counts for nothing until then.
    verified_at: Mapped[datetime | None] = mapped_column()
    # Bumped whenever a setting the poller watches changes (POLLER_WATCHED): a poller reads
    # its connections' versions in one query per scan and re-reads only the rows that moved.
    control_version: Mapped[int] = mapped_column(default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(sa.String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# What a running sync session acts on: its sign-in settings, then the requests it picks up.
POLLER_WATCHED = (
    "imap_host",
    "imap_port",
    "imap_security",
    "imap_username",
    "imap_password_enc",
    "imap_folders",
    "oauth_provider",
    "sync_requested_at",
    "backfill_since",
)


@sa.event.listens_for(Connection, "before_update")
def _bump_control_version(_mapper: Any, _conn: Any, target: Connection) -> None:
    """Every ORM change to a watched setting bumps the version (the API changes connections
    through the ORM; the poller's own bookkeeping writes are Core updates and bump nothing)."""
    state = sa.inspect(target)
    if any(state.attrs[name].history.has_changes() for name in POLLER_WATCHED):
        target.control_version = (target.control_version or 0) + 1


class FolderState(Base):
    """The resumable cursor of one folder: advanced only after messages up to it are stored."""

    __tablename__ = "folder_states"
    __table_args__ = (sa.UniqueConstraint("connection_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(500))
    uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_uid: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Messages received on or after this date that sit below the cursor and are still to be
    # fetched: a new connection's imap.since, or a re-sync after UIDVALIDITY changed. Kept
    # until done, so a sync that fails half-way resumes instead of importing the whole folder.
    backfill_since: Mapped[date | None] = mapped_column()
    messages_synced: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

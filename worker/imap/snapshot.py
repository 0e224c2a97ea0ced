"""What a connection's sync loop reads from its row: a snapshot of its settings (password
decrypted), and the raw columns it watches, read again when the poller sees the row's
``control_version`` move (a changed setting or a request)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from imapclient import IMAPClient
from imapclient.imapclient import SENT
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.engine import single_read
from shared.db.models import Connection
from shared.db.models.connections import POLLER_WATCHED
from worker.imap.client import ImapSettings


@dataclass
class Snapshot:
    """What the loop needs from the connection row, re-read when its control version moves."""

    account_id: int
    kind: str
    inbox_id: int | None
    settings: ImapSettings
    since: date | None
    created_at: datetime
    status: str
    sync_requested_at: datetime | None
    backfill_since: date | None
    control: tuple[Any, ...]  # the raw columns control_state() watches, as of this snapshot
    oauth_provider: str | None = None  # signs in with this provider's tokens (§10)
    control_version: int = 0  # connections.control_version as of this snapshot


def read_snapshot(
    sessions: sessionmaker[Session], box: SecretBox, connection_id: int
) -> Snapshot | None:
    with sessions() as session:
        c = session.get(Connection, connection_id)
        if c is None or c.imap_host is None:
            return None
        return Snapshot(
            c.account_id,
            c.kind,
            c.inbox_id,
            ImapSettings(
                c.imap_host,
                c.imap_port or 993,
                c.imap_security or "ssl",
                c.imap_username or "",
                box.decrypt(c.imap_password_enc) if c.imap_password_enc else "",
                tuple(c.imap_folders) if c.imap_folders else None,
                auth="oauth" if c.oauth_provider else "password",
            ),
            c.imap_since,
            c.created_at,
            c.status,
            c.sync_requested_at,
            c.backfill_since,
            _control(c),
            c.oauth_provider,
            c.control_version,
        )


def folders_to_sync(
    client: IMAPClient, configured: tuple[str, ...] | None
) -> list[tuple[str, str]]:
    """(folder, role): the configured folders, else INBOX and the \\Sent special-use folder."""
    if configured:
        sent = client.find_special_folder(SENT)
        return [(f, "sent" if f == sent else "inbox") for f in configured]
    found = [("INBOX", "inbox")]
    sent = client.find_special_folder(SENT)
    if sent:
        found.append((sent, "sent"))
    return found


_CONTROL = tuple(getattr(Connection, name) for name in POLLER_WATCHED)
# control[:SETTINGS] are the sign-in settings (a change means a new session); the rest are
# requests the running session picks up.
SETTINGS = 7


def _control(c: Connection) -> tuple[Any, ...]:
    return tuple(getattr(c, col.key) for col in _CONTROL)


@dataclass(frozen=True)
class Control:
    version: int
    state: tuple[Any, ...]  # the watched columns, raw (compared without decrypting anything)


def control_state(sessions: sessionmaker[Session], connection_id: int) -> Control | None:
    """The columns the loop watches — the sign-in settings, then the sync/backfill requests —
    and their version; None when the connection is gone or has no IMAP settings."""
    with single_read(sessions) as conn:
        row = conn.execute(
            sa.select(Connection.control_version, *_CONTROL).where(Connection.id == connection_id)
        ).one_or_none()
    return None if row is None or row[1] is None else Control(row[0], tuple(row[1:]))

"""Durable hand-off of raw messages: the one path by which mail enters the system.

The gateway and the pollers store the raw bytes and the envelope in one transaction, and only
then acknowledge (SMTP 250) or advance a cursor (IMAP). Processing starts from the row's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.bulk import insert_each
from shared.db.models import StoredMessage


@dataclass(frozen=True)
class IncomingMessage:
    account_id: int
    source: str  # bcc | forward | team | personal
    raw: bytes
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = ()
    client_address: str | None = None
    inbox_id: int | None = None
    connection_id: int | None = None
    folder: str | None = None
    folder_role: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _row(item: IncomingMessage) -> dict:
    now = utcnow()
    return {
        "account_id": item.account_id,
        "source": item.source,
        "raw": item.raw,
        "raw_size": len(item.raw),
        "envelope_from": item.envelope_from,
        "envelope_to": list(item.envelope_to),
        "client_address": item.client_address,
        "inbox_id": item.inbox_id,
        "connection_id": item.connection_id,
        "folder": item.folder,
        "folder_role": item.folder_role,
        "uidvalidity": item.uidvalidity,
        "uid": item.uid,
        "status": "stored",
        "attempts": 0,
        "received_at": now,
        "updated_at": now,
    }


def store_messages(*, session: Session, items: Sequence[IncomingMessage]) -> list[int | None]:
    """Insert the rows in the session's transaction; returns each row's id, in order, or None
    for an IMAP message already stored for its folder generation (skipped by constraint)."""
    got = insert_each(
        session,
        StoredMessage.__table__,
        [_row(item) for item in items],
        conflict=("connection_id", "folder", "uidvalidity", "uid"),
        returning=("id",),
    )
    return [r[0] if r is not None else None for r in got]


def stale_ids(*, session: Session, older_than_seconds: float, limit: int = 1000) -> list[int]:
    """Stored or stuck-in-processing rows not touched for a while: the sweeper re-enqueues them."""
    from datetime import timedelta

    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    q = (
        sa.select(StoredMessage.id)
        .where(
            StoredMessage.status.in_(("stored", "processing")), StoredMessage.updated_at < cutoff
        )
        .order_by(StoredMessage.id)
        .limit(limit)
    )
    return list(session.scalars(q))

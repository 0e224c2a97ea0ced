"""Durable hand-off of raw messages: the one path by which mail enters the system.

The gateway and the pollers store the raw bytes and the envelope in one transaction, and only
then acknowledge (SMTP 250) or advance a cursor (IMAP). Processing starts from the row's id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared import counters
from shared.db.base import clip, table_of, utcnow
from shared.db.bulk import insert_each, pg_insert_each
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
    # What the gateway found about the sender of this copy (see gateway/smtp/senders.py).
    sender_verdict: str | None = None


def _row(item: IncomingMessage) -> dict[str, Any]:
    now = utcnow()
    return {
        "account_id": item.account_id,
        "source": item.source,
        "raw": item.raw,
        "raw_size": len(item.raw),
        # Envelope values come from the client: cut to their columns, never a failed commit
        # that other SMTP sessions share (the raw message keeps everything whole).
        "envelope_from": clip(item.envelope_from, 320),
        "envelope_to": list(item.envelope_to),
        "client_address": clip(item.client_address, 64),
        "sender_verdict": item.sender_verdict,
        "inbox_id": item.inbox_id,
        "connection_id": item.connection_id,
        "folder": clip(item.folder, 500),
        "folder_role": item.folder_role,
        "uidvalidity": item.uidvalidity,
        "uid": item.uid,
        "status": "stored",
        "attempts": 0,
        "solo_attempts": 0,
        "received_at": now,
        "updated_at": now,
    }


_UNIQUE = ("connection_id", "folder", "uidvalidity", "uid")


def store_messages(*, session: Session, items: Sequence[IncomingMessage]) -> list[int | None]:
    """Insert the rows in the session's transaction; returns each row's id, in order, or None
    for an IMAP message already stored for its folder generation (skipped by constraint)."""
    got = insert_each(
        session,
        table_of(StoredMessage),
        [_row(i) for i in items],
        conflict=_UNIQUE,
        returning=("id",),
    )
    ids = [r[0] if r is not None else None for r in got]
    if any(i is not None for i in ids):  # counted for /metrics once the rows are committed
        counters.on_commit(session, lambda: count_received(items, ids))
    return ids


def store_statement(
    dialect: sa.Dialect, items: Sequence[IncomingMessage]
) -> tuple[str, list[tuple[Any, ...]]]:
    """What :func:`store_messages` sends on PostgreSQL (an ``executemany`` returning each row's
    id), for the gateway's store to pipeline with its version check."""
    return pg_insert_each(
        dialect,
        table_of(StoredMessage),
        [_row(i) for i in items],
        conflict=_UNIQUE,
        returning=("id",),
    )


def count_received(items: Sequence[IncomingMessage], ids: Sequence[int | None]) -> None:
    """Count the committed rows by source for /metrics."""
    taken = Counter(i.source for i, stored in zip(items, ids, strict=True) if stored is not None)
    for source, n in taken.items():
        counters.count_received(source, n)


def stale_ids(
    *,
    session: Session,
    older_than_seconds: float,
    limit: int = 1000,
    statuses: tuple[str, ...] = ("stored", "processing"),
) -> list[int]:
    """Stored or stuck-in-processing rows not touched for a while: the sweeper re-enqueues them."""
    from datetime import timedelta

    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    q = (
        sa.select(StoredMessage.id)
        .where(StoredMessage.status.in_(statuses), StoredMessage.updated_at < cutoff)
        .order_by(StoredMessage.id)
        .limit(limit)
    )
    return list(session.scalars(q))

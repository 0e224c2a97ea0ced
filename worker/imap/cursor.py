"""Per-folder cursors (UIDVALIDITY, last UID), advanced in the same transaction that stores the
messages up to it — so a crash never skips mail and never stores it twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import FolderState
from shared.intake import IncomingMessage, store_messages
from worker.imap.errors import LeaseLost
from worker.imap.leases import still_held
from worker.imap.placeholders import Unfetched, record_unfetched


@dataclass
class Cursor:
    uidvalidity: int | None
    last_uid: int
    backfill_since: date | None = None  # messages below last_uid still to fetch from this date


def load_cursor(session: Session, connection_id: int, folder: str) -> Cursor | None:
    row = session.scalar(
        sa.select(FolderState).where(
            FolderState.connection_id == connection_id, FolderState.name == folder
        )
    )
    if row is None or row.uidvalidity is None:
        return None
    return Cursor(row.uidvalidity, row.last_uid, row.backfill_since)


def _state(session: Session, connection_id: int, folder: str) -> FolderState:
    row = session.scalar(
        sa.select(FolderState).where(
            FolderState.connection_id == connection_id, FolderState.name == folder
        )
    )
    if row is None:
        row = FolderState(connection_id=connection_id, name=folder, last_uid=0, messages_synced=0)
        session.add(row)
    return row


def set_cursor(
    session: Session,
    connection_id: int,
    folder: str,
    uidvalidity: int,
    last_uid: int,
    backfill_since: date | None = None,
) -> None:
    """Start (or restart after a UIDVALIDITY change) a folder's cursor, with the backfill below
    it that is still to do."""
    row = _state(session, connection_id, folder)
    row.uidvalidity, row.last_uid, row.updated_at = uidvalidity, last_uid, utcnow()
    row.backfill_since = backfill_since


def finish_backfill(session: Session, connection_id: int, folder: str) -> None:
    row = _state(session, connection_id, folder)
    row.backfill_since, row.updated_at = None, utcnow()


def store_and_advance(
    session: Session,
    *,
    connection_id: int,
    owner: str | None,
    folder: str,
    uidvalidity: int,
    items: Sequence[IncomingMessage],
    advance_to: int | None,
    unfetched: Sequence[Unfetched] = (),
) -> list[int]:
    """Store a fetched batch, record the messages of its UID range that were not downloaded
    (too large, missing on the server), and move the cursor to ``advance_to`` — in one
    transaction. Returns the ids of the stored messages to process.

    ``advance_to`` is None for a backfill below the cursor. Raises :class:`LeaseLost` (and so
    rolls back) when another poller took the connection over.
    """
    if owner is not None and not still_held(session, connection_id, owner):
        raise LeaseLost(f"connection {connection_id}")
    ids = [i for i in store_messages(session=session, items=items) if i is not None]
    recorded = record_unfetched(session, unfetched)
    row = _state(session, connection_id, folder)
    if advance_to is not None and row.uidvalidity == uidvalidity:
        row.last_uid = max(row.last_uid, advance_to)  # never backwards
    row.messages_synced += len(ids) + len(recorded)
    row.updated_at = utcnow()
    return ids

"""Messages the poller records without their bytes (§6 Bounded): too large to download (by
RFC822.SIZE), or listed by the server but never returned by it.

Each gets a stored_messages row with no raw (``raw_size`` the size the server announced),
already ``done``, and its one decision (§2), ``failed`` with the reason — private to the owner
for a personal connection, like every decision of that connection (C4). They are written in
the transaction that stores their batch and moves the cursor past them: never skipped
silently, never fetched again. Nothing is enqueued: there is nothing to process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.bulk import insert_each
from shared.db.models import Connection, Decision, StoredMessage
from shared.rules import codes

TOO_LARGE, MISSING_ON_SERVER = codes.TOO_LARGE, codes.MISSING_ON_SERVER

_KEY = ("connection_id", "folder", "uidvalidity", "uid")
_STORED = cast(sa.Table, StoredMessage.__table__)
_DECISIONS = cast(sa.Table, Decision.__table__)


@dataclass(frozen=True)
class Unfetched:
    """One message the server listed that is recorded without downloading it."""

    account_id: int
    source: str  # "team" | "personal"
    inbox_id: int | None
    connection_id: int
    folder: str
    folder_role: str
    uidvalidity: int
    uid: int
    size: int  # RFC822.SIZE as the server announced it (0 when it never said), or as sent
    code: str  # TOO_LARGE | MISSING_ON_SERVER


def record_unfetched(session: Session, items: Sequence[Unfetched]) -> list[int]:
    """Write the rows and decisions in the session's transaction; returns the ids of the rows
    that are new (a message already recorded for its folder generation is left alone)."""
    if not items:
        return []
    now = utcnow()
    got = insert_each(
        session,
        _STORED,
        [_row(item, now) for item in items],
        conflict=_KEY,
        returning=("id",),
    )
    owners = _owners(session, {i.connection_id for i in items if i.source == "personal"})
    decisions: list[dict[str, Any]] = []
    new_ids: list[int] = []
    for item, row in zip(items, got, strict=True):
        if row is None:
            continue
        new_ids.append(row[0])
        decisions.append(
            {
                "account_id": item.account_id,
                "stored_message_id": row[0],
                "received_at": now,
                "source": item.source,
                "outcome": codes.FAILED,
                "codes": [item.code],
                "participants": [],
                "connection_id": item.connection_id,
                "private_to_user_id": owners.get(item.connection_id),
                "inbox_id": item.inbox_id,
            }
        )
    insert_each(
        session,
        _DECISIONS,
        decisions,
        conflict=("stored_message_id",),
    )
    return new_ids


def _row(item: Unfetched, now: Any) -> dict[str, Any]:
    return {
        "account_id": item.account_id,
        "source": item.source,
        "raw": None,
        "raw_size": item.size,
        "envelope_from": None,
        "envelope_to": [],
        "client_address": None,
        "inbox_id": item.inbox_id,
        "connection_id": item.connection_id,
        "folder": item.folder,
        "folder_role": item.folder_role,
        "uidvalidity": item.uidvalidity,
        "uid": item.uid,
        "status": "done",
        "attempts": 0,
        "received_at": now,
        "updated_at": now,
        "processed_at": now,
    }


def _owners(session: Session, connection_ids: set[int]) -> dict[int, int | None]:
    if not connection_ids:
        return {}
    rows = session.execute(
        sa.select(Connection.id, Connection.user_id).where(Connection.id.in_(connection_ids))
    )
    return {cid: uid for cid, uid in rows}

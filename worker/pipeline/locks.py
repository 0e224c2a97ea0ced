"""Per-inbox locks for the team pipeline (§5, §8: no lock wider than one inbox).

PostgreSQL advisory locks, held until the batch transaction ends: they lock no row, so nothing
that only references an inbox — the gateway storing mail for it, the API reading or editing it
— ever waits on a worker (§6 Isolation: a 250 never waits for a worker's lock). A row lock on
``team_inboxes`` would: ``FOR UPDATE`` conflicts with the ``FOR KEY SHARE`` that every INSERT
referencing the inbox takes. Taken in ascending order, so two batches never deadlock.

SQLite has one writer at a time anyway (the engine begins every transaction IMMEDIATE).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

# The first key of our two-key advisory locks: the inbox locks' namespace.
INBOX_LOCKS = 0x1B0C5
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:space, :id)")


def lock_inboxes(session: Session, inbox_ids: Iterable[int]) -> bool:
    """Lock the inboxes until the transaction ends; False where there is nothing to lock
    (SQLite: its one writer holds the database from the transaction's start)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    for inbox_id in sorted(set(inbox_ids)):
        session.execute(_LOCK, {"space": INBOX_LOCKS, "id": inbox_id})
    return True

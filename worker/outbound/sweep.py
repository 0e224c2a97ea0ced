"""Outbox entries that need a delivery attempt and may have no task on the broker: due retries,
entries queued while the broker was down, and ``sending`` whose worker vanished (its claim
lapsed). The sweeper enqueues them; a claim makes a duplicate task harmless."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.models import Outbox
from shared.queueing import TaskSender
from worker.outbound.deliver import BATCH

LIMIT = 500


def due_outbox(
    sessions: sessionmaker[Session], *, queued_older_than: float, limit: int = LIMIT
) -> list[int]:
    """Entries to enqueue. Of a connection's queued entries, one in :data:`BATCH` is enough:
    its delivery takes the others of the connection along (worker/outbound/deliver.py)."""
    now = utcnow()
    queued_before = now - timedelta(seconds=queued_older_than)
    with sessions() as session:
        rows = session.execute(
            sa.select(Outbox.id, Outbox.status, Outbox.connection_id)
            .where(
                sa.or_(
                    sa.and_(Outbox.status == "queued", Outbox.created_at < queued_before),
                    sa.and_(Outbox.status == "retrying", Outbox.next_attempt_at <= now),
                    sa.and_(Outbox.status == "sending", Outbox.claimed_until < now),
                )
            )
            .order_by(Outbox.id)
            .limit(limit)
        ).all()
    queued: Counter[int] = Counter()
    picked = []
    for outbox_id, status, connection_id in rows:
        if status == "queued" and connection_id is not None:
            queued[connection_id] += 1
            if (queued[connection_id] - 1) % BATCH:
                continue
        picked.append(outbox_id)
    return picked


def unfiled(
    sessions: sessionmaker[Session], *, sent_before: datetime, limit: int = LIMIT
) -> list[int]:
    """Sent entries whose Sent-folder check never ran (its delayed task was lost)."""
    with sessions() as session:
        return list(
            session.scalars(
                sa.select(Outbox.id)
                .where(
                    Outbox.status == "sent",
                    Outbox.sent_folder.is_(None),
                    Outbox.sent_at < sent_before,
                )
                .order_by(Outbox.id)
                .limit(limit)
            )
        )


def sweep_outbox(
    sessions: sessionmaker[Session],
    sender: TaskSender,
    older_than: float,
    sent_check_seconds: float | None = None,
) -> int:
    ids = due_outbox(sessions, queued_older_than=older_than)
    sent = sender.deliver(ids) if ids else 0
    if sent_check_seconds is not None:
        # Well after its own schedule: the check's task was lost with the broker's contents.
        late = utcnow() - timedelta(seconds=sent_check_seconds + 10 * max(older_than, 60))
        for outbox_id in unfiled(sessions, sent_before=late):
            sender.file_sent(outbox_id, countdown=0)
    return sent

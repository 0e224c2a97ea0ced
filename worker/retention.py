"""Retention (§6): the raw bytes of mail that was not logged are deleted after
``INBOXLOG_RAW_RETENTION_DAYS``; its decision keeps its outcome and codes.

Kept: the raw message of a logged email (attachments are served from it) while the email exists,
and of a message whose failure is unresolved (it can still be retried). Everything else that is
finished — skipped, rejected, duplicate, failed without a pending failure — loses its bytes. The
candidates come from a partial index (received_at WHERE raw IS NOT NULL), so a pass reads only
rows that still hold bytes, oldest first, a bounded number at a time.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.engine import rowcount
from shared.db.models import Failure, LoggedEmail, StoredMessage

CHUNK = 500


def purge_raw(sessions: sessionmaker[Session], older_than_days: float, limit: int = 50_000) -> int:
    """Delete the raw bytes of finished, unlogged mail older than the retention; returns how
    many messages lost their bytes (at most ``limit`` per call, in chunks of CHUNK)."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    purged, after = 0, None
    while purged < limit:
        with sessions() as session, session.begin():
            q = (
                sa.select(StoredMessage.id, StoredMessage.received_at)
                .where(StoredMessage.raw.is_not(None), StoredMessage.received_at < cutoff)
                .order_by(StoredMessage.received_at, StoredMessage.id)
                .limit(CHUNK)
            )
            if after is not None:
                q = q.where(
                    sa.tuple_(StoredMessage.received_at, StoredMessage.id) > sa.tuple_(*after)
                )
            rows = session.execute(q).all()
            if not rows:
                break
            after = (rows[-1].received_at, rows[-1].id)
            ids = [r.id for r in rows]
            result = session.execute(
                sa.update(StoredMessage)
                .where(
                    StoredMessage.id.in_(ids),
                    StoredMessage.status.in_(("done", "failed")),
                    ~sa.exists().where(LoggedEmail.stored_message_id == StoredMessage.id),
                    ~sa.exists().where(
                        Failure.stored_message_id == StoredMessage.id, Failure.resolved_at.is_(None)
                    ),
                )
                .values(raw=None)
            )
            purged += rowcount(result)
    return purged

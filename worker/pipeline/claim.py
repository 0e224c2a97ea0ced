"""Stage ``claim``: take the stored row into processing (idempotent under redelivery)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db.base import utcnow
from shared.db.models import StoredMessage
from worker.pipeline.job import Deps, Job


def claim(job: Job, deps: Deps) -> None:
    with deps.sessions() as session, session.begin():
        row = session.execute(
            sa.update(StoredMessage)
            .where(
                StoredMessage.id == job.stored_id,
                StoredMessage.status.in_(("stored", "processing")),
            )
            .values(status="processing", attempts=StoredMessage.attempts + 1, updated_at=utcnow())
            .returning(
                StoredMessage.account_id,
                StoredMessage.source,
                StoredMessage.inbox_id,
                StoredMessage.connection_id,
                StoredMessage.folder_role,
                StoredMessage.raw,
                StoredMessage.received_at,
                StoredMessage.attempts,
            )
        ).one_or_none()
    if row is None:  # done, failed or gone: a redelivery of finished work
        job.finished = True
        return
    (
        job.account_id,
        job.source,
        job.inbox_id,
        job.connection_id,
        job.folder_role,
        raw,
        job.received_at,
        job.attempts,
    ) = row
    job.raw = raw or b""

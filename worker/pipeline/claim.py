"""Stage ``claim``: take a batch of stored rows into processing (idempotent under redelivery).

Rows already done or failed are not returned: a redelivered task finds nothing left to do.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.db.base import utcnow
from shared.db.models import StoredMessage
from worker.pipeline.job import Deps, Job


def claim(ids: list[int], deps: Deps) -> list[Job]:
    with deps.sessions() as session, session.begin():
        rows = session.execute(
            sa.update(StoredMessage)
            # "not done/failed" rather than "status IN (...)": keeps the planner on the
            # primary key instead of scanning the (status, updated_at) index of a backlog.
            .where(
                StoredMessage.id.in_(ids),
                StoredMessage.status != "done",
                StoredMessage.status != "failed",
            )
            .values(status="processing", attempts=StoredMessage.attempts + 1, updated_at=utcnow())
            .returning(
                StoredMessage.id,
                StoredMessage.account_id,
                StoredMessage.source,
                StoredMessage.inbox_id,
                StoredMessage.connection_id,
                StoredMessage.folder_role,
                StoredMessage.raw,
                StoredMessage.received_at,
                StoredMessage.attempts,
            )
        ).all()
    jobs = []
    for (
        sid,
        account_id,
        source,
        inbox_id,
        connection_id,
        role,
        raw,
        received_at,
        attempts,
    ) in sorted(rows):
        jobs.append(
            Job(
                sid,
                account_id,
                source,
                inbox_id,
                connection_id,
                role,
                raw or b"",
                received_at,
                attempts,
            )
        )
    return jobs

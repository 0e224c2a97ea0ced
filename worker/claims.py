"""Claims on stored rows: the rows a worker is processing are renewed while it works, so the
sweeper takes back only rows whose worker stopped (§6) — never a message a live worker is on.

The renewal runs in the worker's main process, for the tasks its pool children are executing
(Celery's own record of active requests): a child busy in C code — holding the GIL, deaf to
signals until the time limit kills it — still has its rows renewed, and a child that dies stops
being renewed the moment Celery notices. One small UPDATE per round, however many rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.engine import rowcount
from shared.db.models import StoredMessage
from shared.queueing import TASK_PROCESS


def active_ids() -> list[int]:
    """Stored ids of the pipeline tasks this worker's pool is executing right now."""
    from celery.worker import state

    ids: list[int] = []
    for request in list(state.active_requests):
        if request.name == TASK_PROCESS and request.args:
            ids.extend(int(i) for i in request.args[0])
    return ids


def renew(sessions: sessionmaker[Session], ids: Iterable[int]) -> int:
    """Touch the rows still in processing; returns how many were renewed."""
    wanted = sorted(set(ids))
    if not wanted:
        return 0
    with sessions() as session, session.begin():
        result = session.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id.in_(wanted), StoredMessage.status == "processing")
            .values(updated_at=utcnow())
        )
    return rowcount(result)

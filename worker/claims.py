"""Claims on stored rows: the rows a worker is processing are renewed while it works, so the
sweeper takes back only rows whose worker stopped (§6) — never a message a live worker is on.

The renewal runs in the worker's main process, for the tasks its pool children are executing
(Celery's own record of active requests): a child busy in C code — holding the GIL, deaf to
signals until the time limit kills it — still has its rows renewed, and a child that dies stops
being renewed the moment Celery notices. One small UPDATE per round, however many rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.engine import rowcount
from shared.db.models import StoredMessage
from shared.queueing import TASK_PROCESS


def active_claims() -> dict[str, list[int]]:
    """The pipeline tasks this worker's pool is executing right now: task id -> stored ids."""
    from celery.worker import state

    claims: dict[str, list[int]] = {}
    for request in list(state.active_requests):
        if request.name == TASK_PROCESS and request.args and request.id:
            claims[request.id] = [int(i) for i in request.args[0]]
    return claims


def renew(sessions: sessionmaker[Session], claims: Mapping[str, Iterable[int]]) -> int:
    """Touch the rows these tasks hold in processing; returns how many were renewed. A row an
    active task merely carries, held by another (dead) task, is not renewed: it goes stale."""
    wanted = sorted({i for ids in claims.values() for i in ids})
    if not wanted:
        return 0
    with sessions() as session, session.begin():
        result = session.execute(
            sa.update(StoredMessage)
            .where(
                StoredMessage.id.in_(wanted),
                StoredMessage.status == "processing",
                StoredMessage.claimed_by.in_(sorted(claims)),
            )
            .values(updated_at=utcnow())
        )
    return rowcount(result)

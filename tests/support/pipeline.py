"""Run the processing pipeline in-process on a stored message (no broker), for API-level tests."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import transaction
from shared.intake import IncomingMessage, store_messages
from worker.pipeline.driver import process
from worker.pipeline.job import Deps, Job


def ingest(
    sessions: sessionmaker[Session],
    account_id: int,
    source: str,
    raw: bytes,
    domain: str = "log.localhost",
    **kw: object,
) -> Job:
    with transaction(sessions) as s:
        [stored_id] = store_messages(
            session=s, items=[IncomingMessage(account_id=account_id, source=source, raw=raw, **kw)]
        )
    assert stored_id is not None
    return process(stored_id, Deps(sessions), domain)

"""Runs the stages in order for one stored message and turns errors into retries or failures.

The stage order is visible here and only here. Transient errors (database or broker gone) are
re-raised as :class:`TransientError` for the task to retry with backoff; anything else is a
permanent failure once the attempts are used up, recorded with the raw message kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.db.base import utcnow
from shared.db.models import Failure, StoredMessage
from shared.errors import PermanentError, TransientError
from worker.pipeline.claim import claim
from worker.pipeline.decide import decide
from worker.pipeline.gather import gather
from worker.pipeline.job import Deps, Job
from worker.pipeline.record import record
from worker.pipeline.route import route
from worker.pipeline.threading import thread
from worker.pipeline.understand import understand

log = logging.getLogger("inboxlog.pipeline")

# A stage that crashes this often on one message makes it a poison message: record a failure.
MAX_ATTEMPTS = 3

Stage = Callable[[Job, Deps], None]


def stages(logging_domain: str) -> tuple[tuple[str, Stage], ...]:
    return (
        ("claim", claim),
        ("understand", understand),
        ("gather", partial(gather, logging_domain=logging_domain)),
        ("thread", thread),
        ("route", route),
        ("decide", decide),
        ("record", record),
    )


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def process(stored_id: int, deps: Deps, logging_domain: str) -> Job:
    job = Job(stored_id=stored_id)
    started = time.perf_counter()
    stage_name = "claim"
    try:
        for name, stage in stages(logging_domain):
            stage_name = name
            t0 = time.perf_counter()
            stage(job, deps)
            job.timings[name] = time.perf_counter() - t0
            if job.finished:
                return job
    except Exception as exc:
        if is_transient(exc):
            log.warning(
                "stored=%s stage=%s transient error: %s", stored_id, stage_name, type(exc).__name__
            )
            raise TransientError(str(type(exc).__name__)) from exc
        log.exception("stored=%s stage=%s failed (attempt %s)", stored_id, stage_name, job.attempts)
        if isinstance(exc, PermanentError) or job.attempts >= MAX_ATTEMPTS or not job.attempts:
            record_failure(deps, stored_id, stage_name, exc, job.attempts)
            job.outcome = "failed"
            return job
        raise
    duration_ms = (time.perf_counter() - started) * 1000
    log.info(
        "processed stored=%s source=%s outcome=%s duration_ms=%.1f",
        stored_id,
        job.source,
        job.outcome,
        duration_ms,
        extra={
            "stored_id": stored_id,
            "source": job.source,
            "outcome": job.outcome,
            "duration_ms": round(duration_ms, 1),
        },
    )
    return job


def record_failure(
    deps: Deps, stored_id: int, stage: str, exc: BaseException, attempts: int
) -> None:
    """A permanent failure: a failure record, the row marked failed, the raw message kept."""
    with deps.sessions() as session, session.begin():
        row = session.get(StoredMessage, stored_id)
        if row is None:
            return
        row.status, row.updated_at = "failed", utcnow()
        session.add(
            Failure(
                account_id=row.account_id,
                stored_message_id=stored_id,
                stage=stage,
                error=f"{type(exc).__name__}: {str(exc)[:500]}",
                attempts=attempts,
            )
        )


def mark_failed_after_retries(deps: Deps, stored_id: int, exc: BaseException) -> None:
    with deps.sessions() as session:
        attempts = (
            session.scalar(sa.select(StoredMessage.attempts).where(StoredMessage.id == stored_id))
            or 0
        )
    record_failure(deps, stored_id, "transient", exc, attempts)

"""Runs the stages in order for a batch of stored messages and turns errors into retries or
failure records. The stage order is visible here and only here:

    claim → understand → gather → route → decide → record → converse → finish

``claim`` and ``finish`` are one statement each for the whole batch; ``gather`` through
``record`` share one transaction, and bcc/forward/personal mail is recorded with a few
multi-row statements for the whole batch (team mail one message at a time, since threading
depends on the messages before it). If that transaction fails for any reason other than the
database being gone, each message is re-run in a transaction of its own, so one bad message
never takes the others down. Transient errors leave the whole batch for a retry; a message
whose stage crashes is retried a bounded number of times, then becomes a failure record with
its raw message kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.db.base import utcnow
from shared.db.models import StoredMessage
from shared.errors import PermanentError, TransientError
from shared.services.failures import fail_message, resolve_failures
from worker.pipeline.claim import claim
from worker.pipeline.conversations import converse, name_first_conversations
from worker.pipeline.decide import decide
from worker.pipeline.gather import gather, prefetch
from worker.pipeline.job import Batch, Deps, Job
from worker.pipeline.record import record_batch
from worker.pipeline.route import route
from worker.pipeline.understand import understand

log = logging.getLogger("inboxlog.pipeline")

# A stage that crashes this often on one message makes it a poison message: record a failure.
MAX_ATTEMPTS = 3

PER_MESSAGE_STAGES: tuple[tuple[str, Callable[[Job, Batch], None]], ...] = (
    ("gather", gather),
    ("route", route),
    ("decide", decide),
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, PoolTimeout, TransientError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _timed(job: Job, name: str, fn: Callable[[], None]) -> None:
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:
        job.error, job.failed_stage = exc, name
        raise
    finally:
        job.timings[name] = time.perf_counter() - t0


def process_many(ids: list[int], deps: Deps, logging_domain: str) -> list[Job]:
    """Process a batch; returns its jobs. Raises TransientError when the database is gone."""
    started = time.perf_counter()
    try:
        jobs = claim(ids, deps)
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(type(exc).__name__) from exc
        raise
    for job in jobs:
        try:
            _timed(job, "understand", lambda job=job: understand(job))
        except Exception:
            log.exception("stored=%s stage=understand failed", job.stored_id)
    live = [j for j in jobs if j.error is None]
    try:
        _transaction(live, deps, logging_domain)
    except Exception as exc:
        if is_transient(exc):
            log.warning(
                "batch of %s: database unavailable (%s); will retry", len(ids), type(exc).__name__
            )
            raise TransientError(type(exc).__name__) from exc
        if len(live) > 1:
            log.warning(
                "batch of %s failed (%s); processing its messages one by one",
                len(live),
                type(exc).__name__,
            )
            for job in live:
                _reset(job)
                try:
                    _transaction([job], deps, logging_domain)
                except Exception as one:
                    if is_transient(one):
                        raise TransientError(type(one).__name__) from one
        for job in live:
            if job.error is not None:
                log.error(
                    "stored=%s stage=%s failed (attempt %s): %s",
                    job.stored_id,
                    job.failed_stage,
                    job.attempts,
                    type(job.error).__name__,
                )
    _settle_failures(deps, jobs)
    total_ms = (time.perf_counter() - started) * 1000
    for job in jobs:
        if job.error is None:
            log.info(
                "processed stored=%s source=%s outcome=%s duration_ms=%.1f",
                job.stored_id,
                job.source,
                job.outcome,
                total_ms / max(1, len(jobs)),
                extra={
                    "stored_id": job.stored_id,
                    "source": job.source,
                    "outcome": job.outcome,
                    "batch": len(jobs),
                },
            )
    return jobs


def _reset(job: Job) -> None:
    job.error, job.failed_stage, job.decision, job.routing, job.thread = None, "", None, None, None
    job.email_id, job.outcome, job.keep_raw = None, "", True


def _transaction(jobs: list[Job], deps: Deps, logging_domain: str) -> None:
    """gather → thread → route → decide → record for ``jobs`` in one transaction."""
    with deps.sessions() as session, session.begin():
        batch = Batch(session, deps, logging_domain)
        prefetch(batch, jobs)
        for job in jobs:
            for name, stage in PER_MESSAGE_STAGES:
                _timed(job, name, lambda stage=stage, job=job: stage(job, batch))
        t0 = time.perf_counter()
        try:
            record_batch(jobs, batch)
        except Exception as exc:
            for job in jobs:
                job.error, job.failed_stage = exc, "record"
            raise
        for job in jobs:
            job.timings["record"] = (time.perf_counter() - t0) / len(jobs)
        # Team mail joins its conversation in arrival order: threading depends on the
        # messages before it, so this part runs message by message under the inbox lock.
        for job in jobs:
            if job.source == "team" and job.email_id is not None:
                _timed(job, "converse", lambda job=job: converse(job, batch))
        name_first_conversations(batch)
        _finish(session, jobs)


def _finish(session: sa.orm.Session, jobs: list[Job]) -> None:
    now = utcnow()
    done = [j.stored_id for j in jobs]
    if done:
        session.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id.in_(done))
            .values(status="done", processed_at=now, updated_at=now)
        )
        resolve_failures(session=session, stored_message_ids=done)  # a retry that succeeded
    drop = [j.stored_id for j in jobs if not j.keep_raw]
    if drop:
        session.execute(sa.update(StoredMessage).where(StoredMessage.id.in_(drop)).values(raw=None))


def _settle_failures(deps: Deps, jobs: list[Job]) -> None:
    """Poison messages past their attempts become failure records; the rest stay for retry."""
    for job in jobs:
        if job.error is None:
            continue
        if isinstance(job.error, PermanentError) or job.attempts >= MAX_ATTEMPTS:
            record_failure(deps, job.stored_id, job.failed_stage, job.error, job.attempts)
            job.outcome = "failed"


def retry_ids(jobs: list[Job]) -> list[int]:
    return [j.stored_id for j in jobs if j.error is not None and j.outcome != "failed"]


def record_failure(
    deps: Deps, stored_id: int, stage: str, exc: BaseException, attempts: int
) -> None:
    """A permanent failure: a failure record and a ``failed`` decision; the raw message kept."""
    with deps.sessions() as session, session.begin():
        fail_message(
            session=session,
            stored_id=stored_id,
            stage=stage,
            error=f"{type(exc).__name__}: {str(exc)[:500]}",
            attempts=attempts,
        )


def process(stored_id: int, deps: Deps, logging_domain: str) -> Job:
    """One message (tests and tools); the worker processes batches."""
    jobs = process_many([stored_id], deps, logging_domain)
    if not jobs:
        return Job(stored_id=stored_id, outcome="noop")
    return jobs[0]

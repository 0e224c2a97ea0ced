"""Runs the pipeline's stages, in the order of ``PIPELINE``, for a batch of stored messages, and
turns what goes wrong into retries or failure records. The stage order is here and only here.

Each stage is one small function with one job: a batch stage takes the batch, a per-message
stage takes a message and the batch. Consecutive per-message stages are walked message by
message, so a message sees what the messages before it decided (a reply to a thread begun
earlier in the batch, a contact created earlier in it). ``claim`` runs in a transaction of its
own and ``understand`` (parsing, the CPU-heavy part) outside any; every later stage shares one
transaction for the whole batch. The driver times every stage of every message, wall and CPU
(a batch stage's time shared by the batch's messages), and logs both with each message.

When that transaction fails for any reason other than the database being gone, each message is
re-run in a transaction of its own, so one bad message never takes the others down. A message
whose stage crashes is retried a bounded number of times, then becomes a failure record with its
raw message kept. When the task's soft time limit stops the batch, the message at work is
retried alone and the others go back to the queue at once (§6 Bounded work).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import sqlalchemy as sa
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import counters
from shared.db.base import utcnow
from shared.db.models import StoredMessage
from shared.errors import TransientError
from shared.rules import codes
from shared.services.failures import fail_message
from worker.pipeline.claim import MAX_ATTEMPTS, TIMEOUT, Claimed, claim, held_by
from worker.pipeline.conversations import converse
from worker.pipeline.decide import decide
from worker.pipeline.finish import finish
from worker.pipeline.gather import gather, prefetch
from worker.pipeline.job import Batch, Deps, Job
from worker.pipeline.record import record_batch
from worker.pipeline.route import route
from worker.pipeline.thread_match import ThreadConflict, lookup, settle, thread
from worker.pipeline.understand import understand

log = logging.getLogger("inboxlog.pipeline")


class Txn(enum.Enum):
    NONE = "outside any transaction"
    SHARED = "in the batch transaction"


@dataclass(frozen=True)
class Stage:
    name: str
    per_message: Callable[[Job, Batch], None] | None = None
    per_batch: Callable[[Batch], None] | None = None
    txn: Txn = Txn.SHARED


def _understand(job: Job, batch: Batch) -> None:
    understand(job)


PIPELINE: tuple[Stage, ...] = (
    # claim (its own transaction) comes first: see process_many.
    Stage("understand", per_message=_understand, txn=Txn.NONE),  # parse; a forward's original
    Stage("prefetch", per_batch=prefetch),  # account facts, contacts
    Stage("lookup", per_batch=lookup),  # what the batch's team mail can thread on
    Stage("gather", per_message=gather),  # the facts the decision needs
    Stage("thread", per_message=thread),  # team mail: the conversation it joins
    Stage("route", per_message=route),  # a new conversation: the inbox's routing rules
    Stage("decide", per_message=decide),  # the §4 logging decision, with its reasons
    Stage("record", per_batch=record_batch),  # emails, participants, contacts, associations
    Stage("settle", per_batch=settle),  # team inbox locks; threading checked again under them
    Stage("converse", per_batch=converse),  # team mail joins its conversation
    Stage("finish", per_batch=finish),  # decisions; rows done
)
_FIRST_SHARED = next(i for i, s in enumerate(PIPELINE) if s.txn is Txn.SHARED)
assert all(s.txn is Txn.SHARED for s in PIPELINE[_FIRST_SHARED:]), "one shared transaction"


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, PoolTimeout, TransientError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class DatabaseAway(TransientError):
    """The database is unavailable; ``counted`` says whether the claim of the batch counted."""

    def __init__(self, cause: BaseException, *, counted: bool) -> None:
        super().__init__(type(cause).__name__)
        self.counted = counted


@dataclass
class Outcome:
    """What became of a batch: the jobs processed here, and the ids handed back to the queue."""

    jobs: list[Job] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _timed(job: Job, name: str, fn: Callable[[], None]) -> None:
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        fn()
    except Exception as exc:
        job.error, job.failed_stage = exc, name
        raise
    finally:
        job.timings[name] = time.perf_counter() - t0
        job.cpu[name] = time.thread_time() - c0


def _share(jobs: list[Job], name: str, t0: float, c0: float) -> None:
    """A batch stage's wall and CPU time, shared equally by the batch's messages."""
    n = max(1, len(jobs))
    wall, cpu = (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n
    for job in jobs:
        job.timings[name], job.cpu[name] = wall, cpu


def _walk(batch: Batch, stages: tuple[Stage, ...]) -> None:
    """Run ``stages`` over the batch: per-message runs message by message, batch stages once."""
    i = 0
    while i < len(stages):
        stage = stages[i]
        if stage.per_batch is not None:
            batch.current = None
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                stage.per_batch(batch)
            except ThreadConflict:
                raise  # not the messages' fault: the batch runs again (_shared)
            except Exception as exc:
                for job in batch.live:
                    job.error, job.failed_stage = exc, stage.name
                raise
            _share(batch.live, stage.name, t0, c0)
            i += 1
            continue
        run = []
        while i < len(stages) and stages[i].per_message is not None:
            run.append(stages[i])
            i += 1
        for job in batch.live:
            batch.current = job
            for s in run:
                if job.error is not None:
                    break
                fn = s.per_message
                assert fn is not None
                if s.txn is Txn.NONE:
                    try:
                        _timed(job, s.name, partial(fn, job, batch))
                    except SoftTimeLimitExceeded:
                        raise
                    except Exception:  # parsing never fails the others; the job keeps it
                        log.exception("stored=%s stage=%s failed", job.stored_id, s.name)
                else:
                    _timed(job, s.name, partial(fn, job, batch))
    batch.current = None


def _shared(batch: Batch) -> None:
    """The transactional stages for the batch's live jobs, in one transaction; once more, the
    inbox locks taken first, when another worker's commit changed the batch's threading."""
    try:
        _shared_once(batch)
    except ThreadConflict as conflict:
        log.info("batch of %s: threading changed under it (stored=%s); run again locked",
                 len(batch.live), conflict)  # fmt: skip
        batch.restart()
        _shared_once(batch)


def _shared_once(batch: Batch) -> None:
    with batch.deps.sessions() as session, session.begin():
        batch.session = session
        try:
            _walk(batch, PIPELINE[_FIRST_SHARED:])
        finally:
            batch.session = None
        decided = [j for j in batch.live if j.decision is not None]
        counters.on_commit(session, lambda: _count(decided))


def _count(jobs: list[Job]) -> None:
    """Counted for /metrics once the batch is committed (shared/counters.py)."""
    now = utcnow()
    for job in jobs:
        if job.outcome == "already_recorded" or job.decision is None:
            continue
        seconds = (now - job.received_at).total_seconds() if job.received_at else None
        counters.count_processed(job.source, job.outcome, job.decision.codes, seconds)


def process_many(
    ids: list[int],
    deps: Deps,
    logging_domain: str,
    *,
    count: bool = True,
    timed_out: frozenset[int] = frozenset(),
    owner: str | None = None,
    takeover: tuple[str, ...] = (),
) -> Outcome:
    """Process a batch for the task ``owner`` (see claim.py for ``takeover``). Raises
    :class:`DatabaseAway` when the database is gone."""
    started, c0 = time.perf_counter(), time.thread_time()
    stale_before = (
        utcnow() - timedelta(seconds=deps.stale_after) if deps.stale_after is not None else None
    )
    try:
        with deps.sessions() as session, session.begin():
            claimed = claim(
                session,
                ids,
                count=count,
                timed_out=timed_out,
                owner=owner,
                takeover=takeover,
                stale_before=stale_before,
            )
    except Exception as exc:
        if is_transient(exc):
            raise DatabaseAway(exc, counted=False) from exc
        raise
    _share(claimed.jobs, "claim", started, c0)
    outcome = Outcome(claimed.jobs, failed=list(claimed.failed))
    _hand_back(deps, logging_domain, claimed, outcome)
    batch = Batch(deps, logging_domain, jobs=claimed.jobs)
    if not batch.jobs:
        return outcome
    try:
        _run(batch, ids)
    except SoftTimeLimitExceeded:
        _stopped_by_time_limit(batch, outcome, owner)
        return outcome
    _settle_failures(deps, batch.jobs)
    outcome.failed += [j.stored_id for j in batch.jobs if j.outcome == codes.FAILED]
    _log(batch, started)
    return outcome


def _run(batch: Batch, ids: list[int]) -> None:
    _walk(batch, PIPELINE[:_FIRST_SHARED])
    live = batch.live
    try:
        _shared(batch)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        if is_transient(exc):
            log.warning(
                "batch of %s: database unavailable (%s); will retry", len(ids), type(exc).__name__
            )
            raise DatabaseAway(exc, counted=True) from exc
        if len(live) > 1:
            log.warning(
                "batch of %s failed (%s); processing its messages one by one",
                len(live),
                type(exc).__name__,
            )
            for job in live:
                job.reset()
            for job in live:
                single = Batch(batch.deps, batch.logging_domain, jobs=[job])
                try:
                    _shared(single)
                except SoftTimeLimitExceeded:
                    batch.current = single.current or job
                    raise
                except Exception as one:
                    if is_transient(one):
                        raise DatabaseAway(one, counted=True) from one
        for job in live:
            if job.error is not None:
                log.error(
                    "stored=%s stage=%s failed (attempt %s): %s",
                    job.stored_id,
                    job.failed_stage,
                    job.attempts,
                    type(job.error).__name__,
                )


def _hand_back(deps: Deps, logging_domain: str, claimed: Claimed, outcome: Outcome) -> None:
    """Suspects (earlier attempts never finished) are retried alone, each in a task of its own;
    without a queue (tests, tools) right here, one after another."""
    if not claimed.suspects:
        return
    log.warning("%s message(s) of a batch retried alone", len(claimed.suspects))
    outcome.requeued += claimed.suspects
    for stored_id in claimed.suspects:
        if deps.requeue is not None:
            deps.requeue([stored_id], {})
        else:
            alone = process_many([stored_id], deps, logging_domain)
            outcome.jobs += alone.jobs
            outcome.failed += alone.failed


def _stopped_by_time_limit(batch: Batch, outcome: Outcome, owner: str | None) -> None:
    """The soft time limit stopped the batch: the message at work is retried alone (or fails,
    after its last attempt alone); the others go back to the queue at once, this attempt not
    counted against them. Unknown culprit (a batch stage): all are retried alone."""
    culprit = batch.current
    ids = [j.stored_id for j in batch.jobs]
    log.warning(
        "batch of %s stopped by the time limit (stored=%s)",
        len(ids),
        culprit.stored_id if culprit else "?",
    )
    suspects = [culprit.stored_id] if culprit is not None else ids
    others = [i for i in ids if i not in suspects]
    # Like a worker's death (claim.py): three attempts alone, whatever came before them.
    give_up = culprit is not None and len(ids) == 1 and culprit.solo_attempts >= MAX_ATTEMPTS
    with batch.deps.sessions() as session, session.begin():
        session.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id.in_(suspects), held_by(owner))
            .values(status="stored", last_stop=TIMEOUT, claimed_by=None)
        )
        if others:
            session.execute(
                sa.update(StoredMessage)
                .where(StoredMessage.id.in_(others), held_by(owner))
                .values(status="stored", attempts=StoredMessage.attempts - 1, claimed_by=None)
            )
        if give_up:
            assert culprit is not None
            fail_message(
                session=session,
                stored_id=culprit.stored_id,
                stage=culprit.failed_stage or "worker",
                error="processing stopped by the time limit in every attempt",
                attempts=culprit.solo_attempts,
                code=codes.PROCESSING_TIMEOUT,
            )
            culprit.outcome = codes.FAILED
            outcome.failed.append(culprit.stored_id)
    requeue = batch.deps.requeue
    if requeue is None:
        return  # no queue here: the rows are stored; the sweeper takes them
    if others:
        requeue(others, {"count": False})
    if not give_up:
        for stored_id in suspects:
            requeue([stored_id], {})
    outcome.requeued += [*others, *([] if give_up else suspects)]


def _log(batch: Batch, started: float) -> None:
    total_ms = (time.perf_counter() - started) * 1000
    for job in batch.jobs:
        if job.error is None:
            log.info(
                "processed stored=%s source=%s outcome=%s duration_ms=%.1f",
                job.stored_id,
                job.source,
                job.outcome,
                total_ms / max(1, len(batch.jobs)),
                extra={
                    "stored_id": job.stored_id,
                    "source": job.source,
                    "outcome": job.outcome,
                    "batch": len(batch.jobs),
                    "stages_ms": {k: round(v * 1000, 3) for k, v in job.timings.items()},
                    # CPU of this process's thread per stage (the database's own is not in it)
                    "stages_cpu_ms": {k: round(v * 1000, 3) for k, v in job.cpu.items()},
                },
            )


def _settle_failures(deps: Deps, jobs: list[Job]) -> None:
    """Poison messages past their attempts become failure records; the rest stay for retry."""
    for job in jobs:
        if job.error is None:
            continue
        if job.attempts >= MAX_ATTEMPTS:
            record_failure(deps, job.stored_id, job.failed_stage, job.error, job.attempts)
            job.outcome = codes.FAILED


def retry_ids(jobs: list[Job]) -> list[int]:
    return [j.stored_id for j in jobs if j.error is not None and j.outcome != codes.FAILED]


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
    jobs = process_many([stored_id], deps, logging_domain).jobs
    if not jobs:
        return Job(stored_id=stored_id, outcome="noop")
    return jobs[0]

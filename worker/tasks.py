"""Thin Celery tasks: they carry stored-message ids and hand them to the pipeline driver.

Every task runs under a soft and a hard time limit (``INBOXLOG_TASK_TIME_LIMIT``). The soft one
is handled by the driver (the message at work is retried alone, the rest go back at once); the
hard one kills the worker process, and this module's task class puts the batch back on the queue
from the worker's main process, so no message is left waiting for the sweeper (§6).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task
from celery.exceptions import TimeLimitExceeded

from shared import counters
from shared.config import Settings
from shared.db.engine import make_engine, make_session_factory
from shared.queueing import QUEUE_INTAKE, TASK_PROCESS
from worker.pipeline.driver import DatabaseAway, process_many, retry_ids
from worker.pipeline.job import Deps

log = logging.getLogger("inboxlog.worker")


class ProcessState:
    """Per-process database access, created lazily after the pool forks."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings, self.app = settings, app
        self._pid = 0
        self._deps: Deps | None = None

    def deps(self) -> Deps:
        if self._deps is None or self._pid != os.getpid():
            engine = (
                make_engine(
                    self.settings.database_url, pool_size=2, max_overflow=2, pool_pre_ping=False
                )
                if not self.settings.is_embedded
                else make_engine(self.settings.database_url)
            )
            sessions = make_session_factory(engine)
            self._deps = Deps(sessions=sessions, requeue=self.requeue)
            self._pid = os.getpid()
            counters.start_flusher(sessions)  # this pool child's counts reach /metrics
        return self._deps

    def requeue(self, ids: list[int], options: dict[str, Any]) -> None:
        requeue(self.app, ids, options)


def requeue(app: Celery, ids: list[int], options: dict[str, Any]) -> None:
    """Back on the queue as a task of their own; a broker outage leaves them to the sweeper."""
    try:
        app.send_task(TASK_PROCESS, args=[ids], kwargs=options, queue=QUEUE_INTAKE, retry=False)
    except Exception as exc:
        log.warning("requeue deferred to the sweeper: %s", type(exc).__name__)


def backoff(retries: int) -> float:
    return min(60.0, 0.5 * 2.0**retries)


class PipelineTask(Task):
    """Puts a batch the hard time limit killed back on the queue, from the main process."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if isinstance(exc, TimeLimitExceeded) and args:
            ids = list(args[0])
            log.warning("batch of %s killed by the hard time limit; requeued", len(ids))
            # Alone, the message at work is known: say it timed out. In a batch, every message
            # is a suspect and will be retried alone (claim.py).
            requeue(self.app, ids, {"timed_out": ids if len(ids) == 1 else []})


def register_tasks(app: Celery, settings: Settings) -> None:
    state = ProcessState(settings, app)

    @app.task(
        name=TASK_PROCESS,
        bind=True,
        base=PipelineTask,
        max_retries=10,
        acks_late=True,
        soft_time_limit=settings.soft_time_limit,
        time_limit=settings.task_time_limit,
    )
    def process_messages(
        self: Any, stored_ids: list[int], count: bool = True, timed_out: list[int] | None = None
    ) -> dict[str, int]:
        deps = state.deps()
        try:
            outcome = process_many(
                list(stored_ids),
                deps,
                settings.logging_domain,
                count=count,
                timed_out=frozenset(timed_out or ()),
            )
        except DatabaseAway as exc:
            # Database unavailable: retry with backoff; past the budget the sweeper takes over.
            if self.request.retries >= self.max_retries:
                log.warning("batch of %s: retries exhausted; left to the sweeper", len(stored_ids))
                return {"deferred": len(stored_ids)}
            # An attempt the database cut short says nothing about the messages: not counted.
            options = {"count": count and not exc.counted, "timed_out": timed_out or []}
            raise self.retry(
                exc=exc, kwargs=options, countdown=backoff(self.request.retries)
            ) from exc
        again = retry_ids(outcome.jobs)
        if again and self.request.retries < self.max_retries:
            # Crashed stages: only those messages go round again (bounded by MAX_ATTEMPTS).
            raise self.retry(args=(again,), kwargs={}, countdown=backoff(self.request.retries))
        outcomes: dict[str, int] = {}
        for job in outcome.jobs:
            outcomes[job.outcome or "noop"] = outcomes.get(job.outcome or "noop", 0) + 1
        if outcome.requeued:
            outcomes["requeued"] = len(outcome.requeued)
        return outcomes

"""Thin Celery tasks: they carry a stored-message id and hand it to the pipeline driver."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery

from shared.config import Settings
from shared.db.engine import make_engine, make_session_factory
from shared.errors import TransientError
from shared.queueing import TASK_PROCESS
from worker.pipeline.driver import process_many, retry_ids
from worker.pipeline.job import Deps

log = logging.getLogger("inboxlog.worker")


class ProcessState:
    """Per-process database access, created lazily after the pool forks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
            self._deps, self._pid = Deps(sessions=make_session_factory(engine)), os.getpid()
        return self._deps


def backoff(retries: int) -> float:
    return min(60.0, 0.5 * 2**retries)


def register_tasks(app: Celery, settings: Settings) -> None:
    state = ProcessState(settings)
    app.inboxlog_state = state  # type: ignore[attr-defined]

    @app.task(name=TASK_PROCESS, bind=True, max_retries=10, acks_late=True)
    def process_messages(self: Any, stored_ids: list[int]) -> dict[str, int]:
        try:
            jobs = process_many(list(stored_ids), state.deps(), settings.logging_domain)
        except TransientError as exc:
            # Database unavailable: retry with backoff; past the budget the sweeper takes over.
            if self.request.retries >= self.max_retries:
                log.warning("batch of %s: retries exhausted; left to the sweeper", len(stored_ids))
                return {"deferred": len(stored_ids)}
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        again = retry_ids(jobs)
        if again and self.request.retries < self.max_retries:
            # Crashed stages: only those messages go round again (bounded by MAX_ATTEMPTS).
            raise self.retry(args=(again,), countdown=backoff(self.request.retries))
        outcomes: dict[str, int] = {}
        for job in jobs:
            outcomes[job.outcome or "noop"] = outcomes.get(job.outcome or "noop", 0) + 1
        return outcomes

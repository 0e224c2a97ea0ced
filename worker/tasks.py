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

import sqlalchemy as sa
from celery import Celery, Task
from celery.exceptions import TimeLimitExceeded

from shared import counters
from shared.config import Settings
from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory
from shared.db.models import Outbox
from shared.networks import Networks
from shared.oauth.tokens import TokenKeeper
from shared.queueing import QUEUE_INTAKE, TASK_DELIVER, TASK_FILE_SENT, TASK_PROCESS, TaskSender
from worker.imap.session import PollerConfig
from worker.outbound.deliver import DeliveryDeps, deliver
from worker.outbound.sent_folder import file_sent
from worker.pipeline.driver import DatabaseAway, process_many, retry_ids
from worker.pipeline.job import Deps

log = logging.getLogger("inboxlog.worker")


class OutboundState:
    """Per-process delivery dependencies (after the fork), sharing the database access."""

    def __init__(self, settings: Settings, process: ProcessState) -> None:
        self.settings, self.process = settings, process
        self._deps: DeliveryDeps | None = None
        self._sender: TaskSender | None = None
        self._pid = 0

    def sender(self) -> TaskSender:
        if self._sender is None or self._pid != os.getpid():
            self._sender = TaskSender(self.settings)
        return self._sender

    def deps(self) -> DeliveryDeps:
        if self._deps is None or self._pid != os.getpid():
            sessions = self.process.deps().sessions
            box = SecretBox(self.settings.secret_key)
            allowed = Networks.parse(self.settings.allowed_private_networks)
            providers = self.settings.oauth_providers()
            self._pid = os.getpid()
            self._sender = TaskSender(self.settings)
            sender = self._sender
            self._deps = DeliveryDeps(
                sessions=sessions,
                box=box,
                allowed=allowed,
                retry_hours=self.settings.outbound_retry_hours,
                first_retry_seconds=self.settings.outbound_first_retry_seconds,
                ca_file=self.settings.imap_ca_file or None,
                tokens=TokenKeeper(sessions, box, providers, allowed=allowed)
                if providers
                else None,
                on_stored=sender.process,
            )
        return self._deps

    def imap(self) -> PollerConfig:
        deps = self.deps()
        return PollerConfig(ca_file=deps.ca_file, allowed_networks=deps.allowed, tokens=deps.tokens)

    def next_delay(self, outbox_id: int) -> float:
        with self.deps().sessions() as session:
            due = session.scalar(sa.select(Outbox.next_attempt_at).where(Outbox.id == outbox_id))
        return 0.0 if due is None else max(0.0, (due - utcnow()).total_seconds())


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
            self._deps = Deps(
                sessions=sessions,
                requeue=self.requeue,
                stale_after=self.settings.sweep_after_seconds,
            )
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
            # is a suspect and will be retried alone (claim.py). The new task takes over this
            # one's claims (and those it was taking over): its worker is dead, whatever the
            # claims' age.
            takeover = [task_id, *((kwargs or {}).get("takeover") or [])]
            requeue(
                self.app,
                ids,
                {"timed_out": ids if len(ids) == 1 else [], "takeover": takeover},
            )


def register_tasks(app: Celery, settings: Settings) -> None:
    state = ProcessState(settings, app)
    outbound = OutboundState(settings, state)

    @app.task(
        name=TASK_DELIVER,
        acks_late=True,
        soft_time_limit=settings.soft_time_limit,
        time_limit=settings.task_time_limit,
    )
    def deliver_outbox(outbox_id: int) -> dict[str, str]:
        statuses = deliver(int(outbox_id), outbound.deps())
        sender = outbound.sender()
        for entry_id, status in statuses.items():
            if status == "retrying":  # the sweeper is the safety net; this is the schedule
                sender.deliver([entry_id], countdown=outbound.next_delay(entry_id))
            elif status == "sent":
                sender.file_sent(entry_id, countdown=settings.outbound_sent_check_seconds)
        released = [i for i, status in statuses.items() if status == "released"]
        if released:  # the session broke before their turn: another one takes them
            sender.deliver(released)
        return {str(i): status for i, status in statuses.items()}

    @app.task(
        name=TASK_FILE_SENT,
        acks_late=True,
        soft_time_limit=settings.soft_time_limit,
        time_limit=settings.task_time_limit,
    )
    def file_sent_copy(outbox_id: int) -> str | None:
        return file_sent(int(outbox_id), outbound.deps(), outbound.imap())

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
        self: Any,
        stored_ids: list[int],
        count: bool = True,
        timed_out: list[int] | None = None,
        takeover: list[str] | None = None,
    ) -> dict[str, int]:
        deps = state.deps()
        try:
            # The claims name this task's id, which its redeliveries and retries keep.
            outcome = process_many(
                list(stored_ids),
                deps,
                settings.logging_domain,
                count=count,
                timed_out=frozenset(timed_out or ()),
                owner=self.request.id,
                takeover=tuple(takeover or ()),
            )
        except DatabaseAway as exc:
            # Database unavailable: retry with backoff; past the budget the sweeper takes over.
            if self.request.retries >= self.max_retries:
                log.warning("batch of %s: retries exhausted; left to the sweeper", len(stored_ids))
                return {"deferred": len(stored_ids)}
            # An attempt the database cut short says nothing about the messages: not counted.
            options: dict[str, Any] = {
                "count": count and not exc.counted,
                "timed_out": timed_out or [],
            }
            if takeover:  # only when there is one: a worker of the previous release takes it
                options["takeover"] = takeover
            raise self.retry(
                exc=exc, kwargs=options, countdown=backoff(self.request.retries)
            ) from exc
        again = retry_ids(outcome.jobs)
        if again and self.request.retries < self.max_retries:
            # Crashed stages: only those messages go round again (bounded by MAX_ATTEMPTS).
            raise self.retry(
                args=(again,),
                kwargs={"takeover": takeover} if takeover else {},
                countdown=backoff(self.request.retries),
            )
        outcomes: dict[str, int] = {}
        for job in outcome.jobs:
            outcomes[job.outcome or "noop"] = outcomes.get(job.outcome or "noop", 0) + 1
        if outcome.requeued:
            outcomes["requeued"] = len(outcome.requeued)
        return outcomes

"""Celery wiring shared by every process: task names, queues, configuration, and a task sender.

The gateway and pollers enqueue by task *name* (``send_task``), so they never import worker code.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery

from shared.batching import take_batch
from shared.config import Settings

log = logging.getLogger("inboxlog.queue")

TASK_PROCESS = "inboxlog.process_messages"
TASK_DELIVER = "inboxlog.deliver_outbox"
TASK_FILE_SENT = "inboxlog.file_sent"
# Stored-message ids per task: enough to share round trips, small enough to keep latency low.
BATCH_SIZE = 25
# Raw mail per task at most (a bigger message goes alone): bounds a worker's memory per batch.
TASK_BYTES = 32 * 1024 * 1024
QUEUE_INTAKE = "intake"
# Outbound delivery waits on other people's SMTP servers: a queue of its own, so a slow
# upstream never holds up intake processing behind it.
QUEUE_OUTBOUND = "outbound"
QUEUES = (QUEUE_INTAKE, QUEUE_OUTBOUND)


# A delayed task (``countdown``) is held by a worker, unacknowledged, until it is due: on Redis
# past ``visibility_timeout`` it is handed out a second time, on RabbitMQ past the server's
# ``consumer_timeout`` (30 min by default) the worker's channel is closed. Longer delays are not
# published at all: the sweeper enqueues what has come due (outbox retries, Sent-folder checks).
MAX_COUNTDOWN_SECONDS = 600.0
# RabbitMQ's default consumer_timeout: a task running longer has its worker's channel closed.
RABBITMQ_CONSUMER_TIMEOUT_SECONDS = 1800.0


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))


def consumer_timeout_problem(settings: Settings) -> str | None:
    """Why the task time limit does not fit RabbitMQ's default consumer_timeout, if it does not."""
    if not is_amqp(settings.effective_broker_url):
        return None
    if settings.task_time_limit < RABBITMQ_CONSUMER_TIMEOUT_SECONDS:
        return None
    return (
        f"INBOXLOG_TASK_TIME_LIMIT ({settings.task_time_limit:g}s) is not below RabbitMQ's "
        f"default consumer_timeout ({RABBITMQ_CONSUMER_TIMEOUT_SECONDS:g}s): a task that runs "
        "that long has its channel closed and is delivered again, unless the server's "
        "consumer_timeout was raised"
    )


def broker_transport_options(url: str) -> dict[str, Any]:
    """What differs between brokers (see the README's "Brokers")."""
    if url.startswith("redis"):
        # Unacked tasks of a vanished worker come back after this long; the sweeper is faster.
        return {"visibility_timeout": 3600}
    if is_amqp(url):
        # A publish returns once RabbitMQ has the task (publisher confirms), as an LPUSH does
        # on Redis: "enqueued" is never a task lost in a dying connection's buffers.
        return {"confirm_publish": True}
    return {}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Reliability settings from Celery's own guide: late acks, prefetch 1, reject on loss.

    On both brokers a task is acknowledged only once it finished, so a killed worker's task is
    delivered again: at once on RabbitMQ (its connection closes), after ``visibility_timeout``
    on Redis — and within ``INBOXLOG_SWEEP_AFTER_SECONDS`` by the sweeper on either.
    """
    url = settings.effective_broker_url
    return {
        "broker_url": url,
        "broker_transport_options": broker_transport_options(url),
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A worker that loses the broker stops its running tasks: the broker hands them out
        # again (same task id, so the claims pass to the new delivery), and one task is never
        # run twice at once (Celery 6's default).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE_INTAKE,
        "task_routes": {
            TASK_PROCESS: {"queue": QUEUE_INTAKE},
            TASK_DELIVER: {"queue": QUEUE_OUTBOUND},
            TASK_FILE_SENT: {"queue": QUEUE_OUTBOUND},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


class TaskSender:
    """Publishes stored-message ids; a broker outage is logged and left to the sweeper."""

    def __init__(self, settings: Settings) -> None:
        self.app = Celery("inboxlog-sender", set_as_current=False)
        self.app.conf.update(celery_config(settings))
        # Fail fast instead of blocking intake: the row is already durable.
        self.app.conf.task_publish_retry = False

    def process(self, stored_ids: Iterable[int]) -> int:
        """Enqueue the ids in batches of BATCH_SIZE; return how many ids were published."""
        ids = list(stored_ids)
        return self.send_batches([ids[i : i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)])

    def send_batches(self, batches: Sequence[Sequence[int]]) -> int:
        """One task per batch of ids; return how many ids were published."""
        sent = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for chunk in batches:
                    self.app.send_task(
                        TASK_PROCESS,
                        args=[list(chunk)],
                        queue=QUEUE_INTAKE,
                        producer=producer,
                        retry=False,
                    )
                    sent += len(chunk)
        except Exception as exc:  # broker down: the sweeper re-enqueues stored rows
            log.warning("enqueue deferred to the sweeper: %s", type(exc).__name__)
        return sent

    def deliver(self, outbox_ids: Iterable[int], countdown: float | None = None) -> int:
        """Enqueue delivery of outbox entries; a broker outage leaves them to the sweeper, and
        so does a delay past :data:`MAX_COUNTDOWN_SECONDS` (the sweeper enqueues due retries)."""
        sent = 0
        if countdown is not None and countdown > MAX_COUNTDOWN_SECONDS:
            return 0
        try:
            for outbox_id in outbox_ids:
                self.app.send_task(
                    TASK_DELIVER,
                    args=[outbox_id],
                    queue=QUEUE_OUTBOUND,
                    countdown=countdown,
                    retry=False,
                )
                sent += 1
        except Exception as exc:
            log.warning("delivery enqueue deferred to the sweeper: %s", type(exc).__name__)
        return sent

    def file_sent(self, outbox_id: int, countdown: float) -> None:
        """Look for (and if need be APPEND) the sent copy in the mailbox's Sent folder later;
        a delay past :data:`MAX_COUNTDOWN_SECONDS` is left to the sweeper (``unfiled``)."""
        if countdown > MAX_COUNTDOWN_SECONDS:
            return
        try:
            self.app.send_task(
                TASK_FILE_SENT,
                args=[outbox_id],
                queue=QUEUE_OUTBOUND,
                countdown=countdown,
                retry=False,
            )
        except Exception as exc:
            log.warning("sent-folder filing not enqueued: %s", type(exc).__name__)

    def ping(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)


class Enqueuer:
    """Publishes stored ids in the background; while the broker is down it backs off and
    leaves the rows to the sweeper, so intake never waits for the broker.

    Ids are gathered for up to ``linger`` seconds, into tasks of at most ``batch_size`` ids and
    ``batch_bytes`` of raw mail (a message over that goes alone): the worker's cost per message
    falls with the size of its batch, and its memory grows with the bytes of one."""

    def __init__(
        self,
        sender: TaskSender,
        pause_after_failure: float = 5.0,
        linger: float = 0.03,
        batch_size: int = BATCH_SIZE,
        batch_bytes: int = TASK_BYTES,
    ) -> None:
        self.sender, self.pause, self.linger = sender, pause_after_failure, linger
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        self._q: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._down_until = 0.0
        self._thread = threading.Thread(target=self._run, name="inboxlog-enqueue", daemon=True)
        self._thread.start()

    def submit(self, ids: Sequence[int], nbytes: int = 0) -> None:
        """Enqueue ``ids``, each a message of ``nbytes`` (0: unknown, counted by number only)."""
        for i in ids:
            self._q.put((i, nbytes))

    def batches(self, items: Sequence[tuple[int, int]]) -> list[list[int]]:
        """Split (id, bytes) into tasks within both bounds, in order."""
        out: list[list[int]] = []
        ids: list[int] = []
        size = 0
        for stored_id, nbytes in items:
            if ids and (len(ids) >= self.batch_size or size + nbytes > self.batch_bytes):
                out.append(ids)
                ids, size = [], 0
            ids.append(stored_id)
            size += nbytes
        if ids:
            out.append(ids)
        return out

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        # Linger a moment so a steady trickle still makes batches (one task per BATCH_SIZE ids
        # shares the worker's round trips); a burst never waits.
        while (
            batch := take_batch(
                self._q, 4 * self.batch_size, linger=self.linger, linger_limit=self.batch_size
            )
        ) is not None:
            if time.monotonic() < self._down_until:
                continue  # broker known down: the sweeper will enqueue these rows
            if self.sender.send_batches(self.batches(batch)) < len(batch):
                self._down_until = time.monotonic() + self.pause

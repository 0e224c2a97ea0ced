"""The task sender on a real broker, Redis and RabbitMQ: a publish is in the queue when it
returns, and a delay longer than a broker holds an unacknowledged task is left to the sweeper."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from shared.metrics import QueueProbe
from shared.queueing import (
    MAX_COUNTDOWN_SECONDS,
    QUEUE_INTAKE,
    QUEUE_OUTBOUND,
    QUEUES,
    Enqueuer,
    TaskSender,
    celery_config,
    consumer_timeout_problem,
)
from tests.conftest import make_settings
from tests.support.brokers import empty_broker


def test_publish_is_queued_and_long_delays_are_left_to_the_sweeper(
    broker_url: str, tmp_path: Path
) -> None:
    settings = make_settings("sqlite://", tmp_path, broker_url=broker_url)
    sender = TaskSender(settings)
    probe = QueueProbe(broker_url, cache_seconds=0)
    empty_broker(broker_url, QUEUES)
    try:
        assert sender.process([1, 2, 3]) == 3
        assert sender.deliver([7], countdown=MAX_COUNTDOWN_SECONDS + 1) == 0
        sender.file_sent(7, countdown=MAX_COUNTDOWN_SECONDS + 1)
        # Read right after the publishes returned: nothing is still on its way.
        assert probe.depths() == {QUEUE_INTAKE: 1, QUEUE_OUTBOUND: 0}
        assert sender.deliver([7], countdown=30) == 1
        sender.file_sent(7, countdown=30)
        assert probe.depths() == {QUEUE_INTAKE: 1, QUEUE_OUTBOUND: 2}
    finally:
        empty_broker(broker_url, QUEUES)


def test_broker_specific_options(tmp_path: Path) -> None:
    def options(url: str) -> dict:
        conf = celery_config(make_settings("sqlite://", tmp_path, broker_url=url))
        assert (conf["task_acks_late"], conf["task_reject_on_worker_lost"]) == (True, True)
        assert conf["worker_prefetch_multiplier"] == 1
        return dict(conf["broker_transport_options"])

    assert options("redis://127.0.0.1:6379/3") == {"visibility_timeout": 3600}
    assert options("amqp://guest:guest@127.0.0.1:5672/v") == {"confirm_publish": True}


def test_a_time_limit_past_rabbitmqs_consumer_timeout_is_named(tmp_path: Path) -> None:
    def problem(url: str, limit: float) -> str | None:
        settings = make_settings("sqlite://", tmp_path, broker_url=url, task_time_limit=limit)
        return consumer_timeout_problem(settings)

    assert problem("amqp://guest:guest@127.0.0.1:5672/v", 120) is None
    assert problem("redis://127.0.0.1:6379/3", 3600) is None
    assert "consumer_timeout" in (problem("amqp://guest:guest@127.0.0.1:5672/v", 1800) or "")


class RecordingSender:
    """Stands in for TaskSender where only the split into tasks is under test."""

    def __init__(self) -> None:
        self.tasks: list[list[int]] = []
        self.sent = threading.Event()

    def send_batches(self, batches: Sequence[Sequence[int]]) -> int:
        self.tasks += [list(b) for b in batches]
        self.sent.set()
        return sum(len(b) for b in batches)


def test_intake_tasks_are_bounded_by_count_and_by_bytes() -> None:
    """A task holds at most batch_size ids and batch_bytes of mail — a message over the bytes
    goes alone — so a flood of big messages never makes a batch a worker cannot hold."""
    sender = RecordingSender()
    enqueuer = Enqueuer(sender, linger=0, batch_size=3, batch_bytes=100)  # type: ignore[arg-type]
    try:
        items = [(1, 10), (2, 10), (3, 10), (4, 10), (5, 60), (6, 40), (7, 500), (8, 1), (9, 0)]
        assert enqueuer.batches(items) == [[1, 2, 3], [4, 5], [6], [7], [8, 9]]
        assert enqueuer.batches([(i, 0) for i in range(7)]) == [[0, 1, 2], [3, 4, 5], [6]]
    finally:
        enqueuer.close()


def test_the_enqueuer_sends_full_tasks_of_a_stream_without_waiting_out_its_linger() -> None:
    sender = RecordingSender()
    enqueuer = Enqueuer(sender, linger=5.0, batch_size=4)  # type: ignore[arg-type]
    try:
        for i in range(8):  # faster than the linger: full tasks go at once, no waiting
            enqueuer.submit([i], 10)
        assert sender.sent.wait(2.0)
    finally:
        enqueuer.close()  # what is in hand is sent on close
    assert [i for task in sender.tasks for i in task] == list(range(8))
    assert all(len(task) <= 4 for task in sender.tasks)

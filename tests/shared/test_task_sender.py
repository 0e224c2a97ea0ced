"""The task sender on a real broker, Redis and RabbitMQ: a publish is in the queue when it
returns, and a delay longer than a broker holds an unacknowledged task is left to the sweeper."""

from __future__ import annotations

from pathlib import Path

from shared.metrics import QueueProbe
from shared.queueing import (
    MAX_COUNTDOWN_SECONDS,
    QUEUE_INTAKE,
    QUEUE_OUTBOUND,
    QUEUES,
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

"""Queue depths read from a real broker, Redis and RabbitMQ: a queue never declared reads 0, and
the queue after it still reads its depth (RabbitMQ closes a failed passive declare's channel)."""

from __future__ import annotations

import secrets

from kombu import Connection, Exchange, Producer, Queue

from shared.metrics import QueueProbe


def test_missing_queue_reads_zero_and_the_next_queue_its_depth(broker_url: str) -> None:
    tag = secrets.token_hex(4)
    missing, present = f"probe-missing-{tag}", f"probe-present-{tag}"
    exchange = Exchange(present, type="direct")
    queue = Queue(present, exchange, routing_key=present, auto_delete=False)
    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel, exchange=exchange, routing_key=present)
        for i in range(3):
            producer.publish({"n": i}, serializer="json")
        try:
            probe = QueueProbe(broker_url, queues=(missing, present), cache_seconds=0)
            assert probe.depths() == {missing: 0, present: 3}
        finally:
            queue(conn.channel()).delete()

"""Prometheus figures for ``/metrics``: counters from the shared counter table, gauges from
bounded live state, queue depths from the broker.

The API process that serves ``/metrics`` is not the process that takes mail in or processes
it: the processes that do the work count it and add their counts to ``ops_counters``
(shared/counters.py). A scrape reads that table, the backlog and the unresolved failures
through their partial indexes, and the connections — never the message tables. A custom
:class:`Collector`, cached for a few seconds so several scrapers do not multiply the cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from kombu.connection import Connection as BrokerConnection
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from shared import counters
from shared.db.base import utcnow
from shared.db.models import Connection
from shared.queueing import QUEUES
from shared.services import ops


class QueueProbe:
    """Reads queue depths from the broker, time-boxed: an unreachable broker gives None.

    ``queue_declare(passive=True)`` answers the message count on Redis (LLEN over the priority
    lists), on RabbitMQ (the queue's ready messages) and on the embedded SQLAlchemy broker
    alike. On every one it counts tasks waiting, not those a worker holds unacknowledged. Depths
    count *tasks*, and a task carries a batch of stored-message ids.
    """

    def __init__(
        self,
        broker_url: str,
        queues: Iterable[str] = QUEUES,
        timeout: float = 2.0,
        cache_seconds: float = 2.0,
    ) -> None:
        self.url, self.queues, self.timeout = broker_url, tuple(queues), timeout
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, int | None]] | None = None
        self._inflight: threading.Thread | None = None

    def _read(self, out: dict[str, int | None]) -> None:
        opts: dict[str, Any] = {}
        if self.url.startswith(("redis", "rediss")):
            opts = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        with BrokerConnection(self.url, connect_timeout=self.timeout, transport_options=opts) as c:
            c.ensure_connection(max_retries=1, timeout=self.timeout)
            channel = c.default_channel
            for name in self.queues:
                try:
                    out[name] = channel.queue_declare(queue=name, passive=True).message_count
                except c.channel_errors:  # never declared yet: nothing was ever queued
                    # (RabbitMQ answers 404 and closes the channel; py-amqp reopens it.)
                    out[name] = 0

    def waiting(self) -> int | None:
        """Tasks waiting in all the probed queues; None when the broker does not answer."""
        depths = self.depths()
        if any(d is None for d in depths.values()):
            return None
        return sum(d or 0 for d in depths.values())

    def depths(self) -> dict[str, int | None]:
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.cache_seconds:
                return dict(self._cached[1])
            unknown: dict[str, int | None] = dict.fromkeys(self.queues)
            if self._inflight is not None and self._inflight.is_alive():
                return unknown  # the last probe still hangs: do not pile threads up
            out: dict[str, int | None] = {}

            def run() -> None:
                try:
                    self._read(out)
                except Exception:  # broker unreachable: depths stay unknown (None)
                    out.clear()

            worker = threading.Thread(target=run, name="inboxlog-queue-probe", daemon=True)
            self._inflight = worker
            worker.start()
            worker.join(self.timeout + 1.0)
            result = unknown if worker.is_alive() else {q: out.get(q) for q in self.queues}
            self._cached = (time.monotonic(), result)
            return dict(result)


def _families_from_counters(counts: dict[str, list[tuple[dict[str, str], float]]]) -> list[Metric]:
    """The counter families, from the rows of ``ops_counters`` (shared/counters.py)."""
    received = CounterMetricFamily(
        "inboxlog_messages_received", "Messages taken in, by source.", labels=["source"]
    )
    for labels, value in counts.get(counters.RECEIVED, []):
        received.add_metric([labels.get("source", "")], value)
    processed = CounterMetricFamily(
        "inboxlog_messages_processed",
        "Messages with a committed decision, by source and outcome.",
        labels=["source", "outcome"],
    )
    outcomes = CounterMetricFamily(
        "inboxlog_decisions", "Decisions by outcome.", labels=["outcome"]
    )
    by_outcome: dict[str, float] = {}
    for labels, value in counts.get(counters.PROCESSED, []):
        processed.add_metric([labels.get("source", ""), labels.get("outcome", "")], value)
        outcome = labels.get("outcome", "")
        by_outcome[outcome] = by_outcome.get(outcome, 0.0) + value
    for outcome, value in sorted(by_outcome.items()):
        outcomes.add_metric([outcome], value)
    reasons = CounterMetricFamily(
        "inboxlog_decision_reasons", "Decision reason codes by outcome.", labels=["outcome", "code"]
    )
    for labels, value in counts.get(counters.REASONS, []):
        reasons.add_metric([labels.get("outcome", ""), labels.get("code", "")], value)
    failures = CounterMetricFamily(
        "inboxlog_failures", "Failure records by pipeline stage.", labels=["stage"]
    )
    for labels, value in counts.get(counters.FAILURES, []):
        failures.add_metric([labels.get("stage", "")], value)
    replies = CounterMetricFamily(
        "inboxlog_smtp_replies", "SMTP end-of-DATA replies by code.", labels=["code"]
    )
    for labels, value in counts.get(counters.SMTP_REPLIES, []):
        replies.add_metric([labels.get("code", "")], value)

    per_bucket = {labels.get("le", ""): value for labels, value in counts.get(counters.LATENCY, [])}
    buckets, running = [], 0.0
    for bound in (*map(str, counters.LATENCY_BUCKETS), counters.INF):
        running += per_bucket.get(bound, 0.0)
        buckets.append((bound, running))
    latency = HistogramMetricFamily(
        "inboxlog_processing_latency_seconds",
        "Seconds from a message's arrival to the commit of its decision.",
    )
    latency.add_metric([], buckets, per_bucket.get(counters.SUM, 0.0))
    return [received, processed, outcomes, reasons, failures, latency, replies]


def collect_families(session: Session, depths: dict[str, int | None]) -> list[Metric]:
    """Every family. Bounded cost: the counter table (a row per series), the backlog through
    its partial index, unresolved failures through theirs, the connections — never a scan of
    the message tables, whatever their size."""
    fams = _families_from_counters(counters.read_counts(session=session))

    pipeline = GaugeMetricFamily(
        "inboxlog_pipeline_messages",
        "Messages waiting (stored) or being processed, by status.",
        labels=["status"],
    )
    backlog = ops.backlog(session=session)
    for status in ops.BACKLOG_STATES:
        pipeline.add_metric([status], backlog.counts.get(status, 0))
    fams.append(pipeline)
    fams.append(
        GaugeMetricFamily(
            "inboxlog_oldest_unprocessed_seconds",
            "Age of the oldest message not yet processed (0 when none).",
            value=backlog.oldest_seconds or 0.0,
        )
    )

    unresolved = GaugeMetricFamily(
        "inboxlog_failures_unresolved", "Failures not yet resolved, by stage.", labels=["stage"]
    )
    for stage, n in ops.unresolved_by_stage(session=session).items():
        unresolved.add_metric([stage], n)
    fams.append(unresolved)

    queue = GaugeMetricFamily(
        "inboxlog_queue_depth", "Tasks waiting in each broker queue.", labels=["queue"]
    )
    for name, depth in depths.items():
        if depth is not None:
            queue.add_metric([name], depth)
    fams.append(queue)
    known = bool(depths) and all(d is not None for d in depths.values())
    fams.append(
        GaugeMetricFamily("inboxlog_broker_up", "1 when the broker answered.", value=int(known))
    )

    by_status = GaugeMetricFamily(
        "inboxlog_connections", "Connections by status.", labels=["status"]
    )
    for status, n in session.execute(
        sa.select(Connection.status, sa.func.count()).group_by(Connection.status)
    ):
        by_status.add_metric([status], n)
    stopped = GaugeMetricFamily(
        "inboxlog_connection_needs_person",
        "1 for each connection stopped until a person acts: reauth_required (reconnect, §10) "
        "or auth_failed (new credentials).",
        labels=["connection_id", "account_id", "status"],
    )
    for cid, acc, status in session.execute(
        sa.select(Connection.id, Connection.account_id, Connection.status).where(
            Connection.status.in_(("reauth_required", "auth_failed"))
        )
    ):
        stopped.add_metric([str(cid), str(acc), status], 1)
    fams += [by_status, stopped]

    lag = GaugeMetricFamily(
        "inboxlog_imap_sync_lag_seconds",
        "Seconds since the connection's last successful IMAP sync.",
        labels=["connection_id", "account_id", "kind", "status"],
    )
    last_ok = GaugeMetricFamily(
        "inboxlog_imap_last_success_timestamp_seconds",
        "Unix time of the connection's last successful IMAP sync.",
        labels=["connection_id", "account_id", "kind", "status"],
    )
    now = utcnow()
    for cid, acc, kind, status, last in session.execute(
        sa.select(
            Connection.id,
            Connection.account_id,
            Connection.kind,
            Connection.status,
            Connection.last_sync_at,
        ).where(Connection.imap_host.is_not(None), Connection.last_sync_at.is_not(None))
    ):
        if last is None:  # filtered out above; for the type checker
            continue
        labels = [str(cid), str(acc), kind, status]
        lag.add_metric(labels, max(0.0, (now - last).total_seconds()))
        last_ok.add_metric(labels, last.timestamp())
    fams += [lag, last_ok]
    return fams


class OpsCollector(Collector):
    """Collects :func:`collect_families` in one read transaction, cached ``cache_seconds``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        depths: Callable[[], dict[str, int | None]],
        cache_seconds: float = 5.0,
    ) -> None:
        self.sessions, self.depths, self.cache_seconds = sessions, depths, cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                depths = self.depths()
                with self.sessions() as session:
                    self._cached = (time.monotonic(), collect_families(session, depths))
            fams = self._cached[1]
        yield from fams

    def describe(self) -> list[Any]:
        return []  # no description at registration: nothing is queried until a scrape

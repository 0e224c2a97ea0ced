"""Prometheus figures computed from the database (and the broker) at scrape time.

The API process that serves ``/metrics`` is not the process that takes mail in or processes it,
so process-global counters would only describe the API. Every figure is an aggregate query over
the shared database instead — a custom :class:`Collector`, cached for a few seconds so that
several scrapers (or the ops page) do not multiply the cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from kombu import Connection as BrokerConnection
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.models import Connection, Decision, Failure, StoredMessage
from shared.queueing import QUEUES
from shared.services import ops

# Seconds from arrival to the end of processing.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class QueueProbe:
    """Reads queue depths from the broker, time-boxed: an unreachable broker gives None.

    ``queue_declare(passive=True)`` answers the message count on Redis (LLEN over the priority
    lists) and on the embedded SQLAlchemy broker alike. Depths count *tasks*, and a task carries
    a batch of stored-message ids.
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
                    out[name] = 0

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


def _latency(session: Session) -> tuple[list[tuple[str, float]], float, int]:
    lat = ops.epoch(session, StoredMessage.processed_at) - ops.epoch(
        session, StoredMessage.received_at
    )
    cols = [sa.func.sum(sa.case((lat <= b, 1), else_=0)) for b in LATENCY_BUCKETS]
    row = session.execute(
        sa.select(*cols, sa.func.count(), sa.func.sum(lat)).where(
            StoredMessage.status == "done", StoredMessage.processed_at.is_not(None)
        )
    ).one()
    total = int(row[-2] or 0)
    buckets = [(str(b), float(row[i] or 0)) for i, b in enumerate(LATENCY_BUCKETS)]
    buckets.append(("+Inf", float(total)))
    return buckets, float(row[-1] or 0.0), total


def collect_families(session: Session, depths: dict[str, int | None]) -> list[Metric]:
    """Every family, from a handful of aggregate queries."""
    fams: list[Metric] = []
    received = CounterMetricFamily(
        "inboxlog_messages_received", "Messages taken in, by source.", labels=["source"]
    )
    for source, n in session.execute(
        sa.select(StoredMessage.source, sa.func.count()).group_by(StoredMessage.source)
    ):
        received.add_metric([source], n)
    fams.append(received)

    pipeline = GaugeMetricFamily(
        "inboxlog_pipeline_messages", "Stored messages by pipeline status.", labels=["status"]
    )
    for status, n in ops.pipeline_counts(session=session, account_id=None).items():
        pipeline.add_metric([status], n)
    fams.append(pipeline)
    oldest = ops.oldest_unprocessed_seconds(session=session, account_id=None)
    fams.append(
        GaugeMetricFamily(
            "inboxlog_oldest_unprocessed_seconds",
            "Age of the oldest message not yet processed (0 when none).",
            value=oldest or 0.0,
        )
    )

    outcomes = CounterMetricFamily(
        "inboxlog_decisions", "Decisions by outcome.", labels=["outcome"]
    )
    reasons = CounterMetricFamily(
        "inboxlog_decision_reasons", "Decision reason codes by outcome.", labels=["outcome", "code"]
    )
    by_outcome: dict[str, int] = {}
    by_code: dict[tuple[str, str], int] = {}
    # Distinct (outcome, codes) combinations are few; expanding the code lists here keeps the
    # query portable (no JSON unnesting) and the label set bounded by the reason-code table.
    for outcome, codes, n in session.execute(
        sa.select(Decision.outcome, Decision.codes, sa.func.count()).group_by(
            Decision.outcome, Decision.codes
        )
    ):
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
        for code in codes or []:
            by_code[(outcome, str(code))] = by_code.get((outcome, str(code)), 0) + n
    for outcome, n in sorted(by_outcome.items()):
        outcomes.add_metric([outcome], n)
    for (outcome, code), n in sorted(by_code.items()):
        reasons.add_metric([outcome, code], n)
    fams += [outcomes, reasons]

    failures = CounterMetricFamily(
        "inboxlog_failures", "Failure records by pipeline stage.", labels=["stage"]
    )
    unresolved = GaugeMetricFamily(
        "inboxlog_failures_unresolved", "Failures not yet resolved, by stage.", labels=["stage"]
    )
    open_count = sa.func.sum(sa.case((Failure.resolved_at.is_(None), 1), else_=0))
    for stage, n, still_open in session.execute(
        sa.select(Failure.stage, sa.func.count(), open_count).group_by(Failure.stage)
    ):
        failures.add_metric([stage], n)
        unresolved.add_metric([stage], int(still_open or 0))
    fams += [failures, unresolved]

    buckets, total_seconds, _ = _latency(session)
    latency = HistogramMetricFamily(
        "inboxlog_processing_latency_seconds",
        "Seconds from a message's arrival to the end of its processing (done messages).",
    )
    latency.add_metric([], buckets, total_seconds)
    fams.append(latency)

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
        labels = [str(cid), str(acc), kind, status]
        lag.add_metric(labels, max(0.0, (now - last).total_seconds()))
        last_ok.add_metric(labels, last.timestamp())
    fams += [lag, last_ok]

    replies = CounterMetricFamily(
        "inboxlog_smtp_replies", "SMTP end-of-DATA replies by code.", labels=["code"]
    )
    for code, n in ops.gateway_counts(session=session)["by_code"].items():
        replies.add_metric([code], n)
    fams.append(replies)
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

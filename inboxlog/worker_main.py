"""Starts a Celery worker for the intake queue, with the sweeper in its main process."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown

from inboxlog.runtime import Runtime
from shared import counters
from shared.metrics import QueueProbe
from shared.queueing import (
    QUEUE_INTAKE,
    QUEUE_OUTBOUND,
    TaskSender,
    consumer_timeout_problem,
)
from worker.celery_app import create_celery
from worker.claims import active_claims
from worker.sweeper import Sweeper

log = logging.getLogger("inboxlog.worker")


def run_worker(rt: Runtime, *, concurrency: int, pool: str) -> None:
    if problem := consumer_timeout_problem(rt.settings):
        log.warning("%s", problem)
    app = create_celery(rt.settings)
    sweeper = Sweeper(
        rt.sessions,
        TaskSender(rt.settings),
        rt.settings.sweep_after_seconds,
        retention_days=rt.settings.raw_retention_days,
        active_claims=active_claims,
        sent_check_seconds=rt.settings.outbound_sent_check_seconds,
        waiting=QueueProbe(rt.settings.broker_url, [QUEUE_INTAKE]).waiting,
    )

    # Started once the pool has forked, so no child inherits the sweeper's thread or connections.
    @worker_ready.connect(weak=False)
    def _start_sweeper(**_: Any) -> None:
        sweeper.start()
        counters.start_flusher(rt.sessions)  # the main process fails messages too (claims)

    @worker_shutdown.connect(weak=False)
    def _stop_sweeper(**_: Any) -> None:
        sweeper.stop()
        counters.stop_flusher()

    @worker_process_shutdown.connect(weak=False)
    def _last_counts(**_: Any) -> None:  # a pool child's last counts before it exits
        counters.stop_flusher()

    app.worker_main(
        [
            "worker",
            "-Q",
            f"{QUEUE_INTAKE},{QUEUE_OUTBOUND}",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            rt.settings.log_level,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            f"inboxlog-{QUEUE_INTAKE}-{os.getpid()}@%h",
        ]
    )

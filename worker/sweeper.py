"""The worker's main-process housekeeping thread: renews the claims of the rows its pool is
processing (worker/claims.py), re-enqueues stored-but-unprocessed messages so an emptied or lost
broker loses no mail, and runs retention (worker/retention.py) now and then.

A row counts as stale when nobody touched it for ``older_than`` seconds: a stored row never
taken, or a processing row whose worker stopped renewing its claim. A live worker renews its rows
three times per ``older_than``, so a slow message is never handed to a second worker (§6). A row
that keeps stopping its worker is retried alone and failed by the claim (worker/pipeline/claim.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.models import StoredMessage
from shared.intake import stale_ids
from shared.queueing import TaskSender
from worker.claims import renew
from worker.outbound.sweep import sweep_outbox
from worker.retention import purge_raw

log = logging.getLogger("inboxlog.sweeper")

RETENTION_EVERY_SECONDS = 600.0
# While a backlog drains, a stored row is re-sent only once this many times as stale as usual:
# a task the broker lost still comes back (10 min at the default 60 s) however long the backlog.
BACKLOG_PATIENCE = 10


def sweep_once(
    sessions: sessionmaker[Session],
    sender: TaskSender,
    older_than: float,
    waiting: Callable[[], int | None] | None = None,
) -> int:
    """Re-enqueue the stale rows. ``waiting``: the tasks waiting in the intake queue (None:
    unknown). While tasks wait, a backlog is draining and a stored row's task is most likely
    among them: re-sending every such row once per ``older_than`` would only multiply the work
    of a backlog (the more behind, the more re-sent). Such rows are re-sent once the queue has
    drained, which is also when a row the broker lost shows — or, should the queue never drain,
    once they are ``BACKLOG_PATIENCE`` times as stale. A processing row whose worker stopped
    renewing its claim is re-sent at once."""
    backlog = waiting is not None and (waiting() or 0) > 0
    with sessions() as session, session.begin():
        if backlog:
            ids = stale_ids(
                session=session, older_than_seconds=older_than, statuses=("processing",)
            ) + stale_ids(
                session=session,
                older_than_seconds=older_than * BACKLOG_PATIENCE,
                statuses=("stored",),
            )
        else:
            ids = stale_ids(session=session, older_than_seconds=older_than)
        if not ids:
            return 0
        # Touch the rows so the next sweep waits its turn again, and release the stale claims:
        # their task is gone, and the re-sent one takes the rows as stored (claim.py). Rows
        # claimed or finished since they were read are left alone.
        ids = sorted(
            session.scalars(
                sa.update(StoredMessage)
                .where(
                    StoredMessage.id.in_(ids),
                    StoredMessage.status.in_(("stored", "processing")),
                    StoredMessage.updated_at < utcnow() - timedelta(seconds=older_than),
                )
                .values(updated_at=utcnow(), status="stored", claimed_by=None)
                .returning(StoredMessage.id)
            )
        )
        if not ids:
            return 0
    sent = sender.process(ids)  # in order, up to the first failure
    if sent < len(ids):
        # The broker did not take them: stale again at once, so the next sweep retries them
        # however long a backlog is.
        with sessions() as session, session.begin():
            session.execute(
                sa.update(StoredMessage)
                .where(StoredMessage.id.in_(ids[sent:]), StoredMessage.status == "stored")
                .values(updated_at=utcnow() - timedelta(seconds=older_than * BACKLOG_PATIENCE + 1))
            )
    log.info("sweeper re-enqueued %s of %s stale messages", sent, len(ids))
    return sent


class Sweeper(threading.Thread):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        sender: TaskSender,
        older_than: float,
        interval: float | None = None,
        retention_days: float | None = None,
        active_claims: Callable[[], Mapping[str, list[int]]] | None = None,
        sent_check_seconds: float | None = None,
        waiting: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(name="inboxlog-sweeper", daemon=True)
        self.sessions, self.sender, self.older_than = sessions, sender, older_than
        self.interval = interval if interval is not None else max(1.0, min(30.0, older_than / 2))
        self.renew_every = max(0.2, older_than / 3)
        self.retention_days = retention_days
        self.active_claims = active_claims
        self.sent_check_seconds = sent_check_seconds
        self.waiting = waiting  # tasks waiting in the intake queue; see sweep_once
        self.stopped = threading.Event()
        # Retention looks about ten times per retention period, at most every 10 minutes.
        self.retention_every = (
            min(RETENTION_EVERY_SECONDS, retention_days * 86400 / 10) if retention_days else 0.0
        )

    def run(self) -> None:
        now = time.monotonic()
        due = {"sweep": now + self.interval}
        if self.active_claims is not None:
            due["renew"] = now
        if self.retention_days is not None:
            due["retention"] = now + self.interval
        while not self.stopped.is_set():
            now = time.monotonic()
            if self.active_claims is not None and now >= due["renew"]:
                due["renew"] = now + self.renew_every
                self._step("claim renewal", self._renew)
            if now >= due["sweep"]:
                due["sweep"] = now + self.interval
                self._step(
                    "sweep",
                    lambda: sweep_once(self.sessions, self.sender, self.older_than, self.waiting),
                )
                self._step(
                    "outbox sweep",
                    lambda: sweep_outbox(
                        self.sessions, self.sender, self.older_than, self.sent_check_seconds
                    ),
                )
            if self.retention_days is not None and now >= due["retention"]:
                due["retention"] = now + self.retention_every
                self._step("retention", self._retention)
            wait = min(due.values()) - time.monotonic()
            self.stopped.wait(max(0.05, wait))

    def _renew(self) -> None:
        assert self.active_claims is not None
        renew(self.sessions, self.active_claims())

    def _retention(self) -> None:
        assert self.retention_days is not None
        purged = purge_raw(self.sessions, self.retention_days)
        if purged:
            log.info("retention: raw bytes of %s message(s) deleted", purged)

    def _step(self, name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # database down: the next round tries again
            log.warning("%s failed: %s", name, type(exc).__name__)

    def stop(self) -> None:
        self.stopped.set()

"""Operational counters: counted in memory by the process that does the work, added to the shared
``ops_counters`` table as deltas every few seconds, read by ``/metrics`` and ``inboxlog status``.

The API that serves ``/metrics`` is not the process that takes mail in or processes it, and
deriving the figures from the message tables made every scrape scan them. So each process
keeps a :class:`Counters` set (thread-safe; a forked child starts empty rather than re-adding
its parent's counts) and a :class:`Flusher` thread adds what is new since the last flush in
one short transaction. A failed flush leaves the delta pending for the next one: nothing is
lost while the database is away, nothing is counted twice. What the counters describe is
counted only once it is committed (:func:`on_commit`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.models.ops import OpsCounter

log = logging.getLogger("inboxlog.counters")

# How often a process adds its counts to the table.
FLUSH_SECONDS = 5.0

# Series names (``ops_counters.name``) and their labels.
RECEIVED = "messages_received"  # source
PROCESSED = "messages_processed"  # source, outcome (one per decision, failed ones included)
REASONS = "decision_reasons"  # outcome, code
FAILURES = "failures"  # stage
LATENCY = "processing_latency_seconds"  # le (one bucket each, not cumulative); sum; count
SMTP_REPLIES = "smtp_replies"  # code

# Seconds from a message's arrival to the commit of its decision.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
INF = "+Inf"
SUM, COUNT = "sum", "count"

Key = tuple[str, str]  # (name, encoded labels)


def encode_labels(labels: Mapping[str, str] | None = None) -> str:
    """Canonical label text: ``k=v`` sorted by key, joined by ``,`` (values are codes from
    fixed tables: sources, outcomes, reason codes, stages, SMTP codes)."""
    if not labels:
        return ""
    return ",".join(f"{k}={str(v).replace(',', '_')}" for k, v in sorted(labels.items()))


def decode_labels(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(",")) if text else {}


class Counters:
    """This process's counts since it started, and how much of them the table already has."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._totals: dict[Key, float] = {}
        self._flushed: dict[Key, float] = {}

    def _mine(self) -> None:
        """A forked child inherits its parent's counts, which the parent flushes: drop them."""
        if self._pid != os.getpid():
            self._pid, self._totals, self._flushed = os.getpid(), {}, {}

    def add(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        key = (name, encode_labels(labels))
        with self._lock:
            self._mine()
            self._totals[key] = self._totals.get(key, 0.0) + value

    def pending(self) -> dict[Key, float]:
        with self._lock:
            self._mine()
            return {
                key: total - self._flushed.get(key, 0.0)
                for key, total in self._totals.items()
                if total != self._flushed.get(key, 0.0)
            }

    def flush(self, sessions: sessionmaker[Session]) -> int:
        """Add the pending deltas to the table; returns how many series changed."""
        deltas = self.pending()
        if not deltas:
            return 0
        with sessions() as session, session.begin():
            add_counts(session=session, deltas=deltas)
        with self._lock:
            for key, delta in deltas.items():
                self._flushed[key] = self._flushed.get(key, 0.0) + delta
        return len(deltas)

    def flush_logged(self, sessions: sessionmaker[Session]) -> None:
        try:
            self.flush(sessions)
        except Exception as exc:  # database away: the deltas wait for the next flush
            log.warning("counters not flushed: %s", type(exc).__name__)


# The process's counter set. Created empty at import (no I/O); a forked child resets it.
PROCESS = Counters()


def add_counts(*, session: Session, deltas: Mapping[Key, float]) -> None:
    """``INSERT … ON CONFLICT (name, labels) DO UPDATE value += excluded.value``.

    Rows go in key order, so two processes flushing the same series lock them in the same
    order and never deadlock.
    """
    now = utcnow()
    rows = [
        {"name": name, "labels": labels, "value": float(delta), "updated_at": now}
        for (name, labels), delta in sorted(deltas.items())
        if delta
    ]
    if not rows:
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt: Any = insert(OpsCounter).values(rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["name", "labels"],
            set_={
                "value": OpsCounter.value + stmt.excluded.value,
                "updated_at": stmt.excluded.updated_at,
            },
        )
    )


def read_counts(
    *, session: Session, names: Iterable[str] | None = None
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every series (or those of ``names``), by name: one read of the small counter table."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    stmt = sa.select(OpsCounter.name, OpsCounter.labels, OpsCounter.value).order_by(
        OpsCounter.name, OpsCounter.labels
    )
    if names is not None:
        stmt = stmt.where(OpsCounter.name.in_(list(names)))
    rows = session.execute(stmt)
    for name, labels, value in rows:
        out.setdefault(name, []).append((decode_labels(labels), float(value)))
    return out


# --- what the working processes count ----------------------------------------------------------


def latency_bucket(seconds: float) -> str:
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return str(bound)
    return INF


def count_received(source: str, n: int = 1, *, counters: Counters = PROCESS) -> None:
    """Messages durably stored by the gateway or a poller (call after the commit)."""
    counters.add(RECEIVED, {"source": source}, n)


def count_processed(
    source: str,
    outcome: str,
    codes: Iterable[str],
    seconds_from_arrival: float | None,
    *,
    counters: Counters = PROCESS,
) -> None:
    """One message whose decision was committed: its outcome, reason codes, and the seconds
    from its arrival (``received_at``) to that commit (None: not timed)."""
    counters.add(PROCESSED, {"source": source, "outcome": outcome})
    for code in codes:
        counters.add(REASONS, {"outcome": outcome, "code": str(code)})
    if seconds_from_arrival is not None:
        seconds = max(0.0, seconds_from_arrival)
        counters.add(LATENCY, {"le": latency_bucket(seconds)})
        counters.add(LATENCY, {"le": SUM}, seconds)
        counters.add(LATENCY, {"le": COUNT})


def count_failure(
    stage: str, source: str, codes: Iterable[str], *, counters: Counters = PROCESS
) -> None:
    """A failure record (and its ``failed`` decision) was committed."""
    counters.add(FAILURES, {"stage": stage})
    counters.add(PROCESSED, {"source": source, "outcome": "failed"})
    for code in codes:
        counters.add(REASONS, {"outcome": "failed", "code": str(code)})


def count_smtp_reply(code: str, *, counters: Counters = PROCESS) -> None:
    """One end-of-DATA reply, by its three-digit code."""
    counters.add(SMTP_REPLIES, {"code": code[:3]})


# --- counting what a transaction did, once it is committed --------------------------------------

_ON_COMMIT = "inboxlog.counters.on_commit"


def _run_pending(session: Session) -> None:
    for fn in session.info.pop(_ON_COMMIT, []):
        fn()


def _drop_pending(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


def on_commit(session: Session, fn: Callable[[], Any]) -> None:
    """Run ``fn`` (a counting call) once the session's transaction commits; a rollback drops
    it. So a count never describes work that was rolled back."""
    pending = session.info.get(_ON_COMMIT)
    if pending is None:
        pending = session.info[_ON_COMMIT] = []
        if not session.info.get(_ON_COMMIT + ".listening"):
            session.info[_ON_COMMIT + ".listening"] = True
            sa.event.listen(session, "after_commit", _run_pending)
            sa.event.listen(session, "after_rollback", _drop_pending)
    pending.append(fn)


# --- flushing -------------------------------------------------------------------------------


class Flusher(threading.Thread):
    """Adds this process's counts to the table every ``every`` seconds, and once more when
    stopped (so the last seconds before a shutdown are counted)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        counters: Counters = PROCESS,
        every: float = FLUSH_SECONDS,
    ) -> None:
        super().__init__(name="inboxlog-counters", daemon=True)
        self.sessions, self.counters, self.every = sessions, counters, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.counters.flush_logged(self.sessions)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)
        self.counters.flush_logged(self.sessions)


_flushers: dict[int, Flusher] = {}
_flushers_lock = threading.Lock()


def start_flusher(sessions: sessionmaker[Session], every: float = FLUSH_SECONDS) -> Flusher:
    """This process's flusher of :data:`PROCESS`, started on first call (once per process:
    call it after a fork, e.g. when a pool child builds its database access)."""
    with _flushers_lock:
        pid = os.getpid()
        flusher = _flushers.get(pid)
        if flusher is None or not flusher.is_alive():
            flusher = _flushers[pid] = Flusher(sessions, PROCESS, every)
            flusher.start()
        return flusher


def stop_flusher() -> None:
    """Stop this process's flusher, after a last flush (call it when the process shuts down)."""
    with _flushers_lock:
        flusher = _flushers.pop(os.getpid(), None)
    if flusher is not None:
        flusher.stop()

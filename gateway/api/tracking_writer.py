"""Tracking hits written in batches (§9: the tracking endpoints are cheap).

Requests hand their hit to one writer thread and wait for the commit that holds it: a
request is answered once its event is stored, yet a thousand requests cost a handful of
transactions instead of a thousand. Batches form by themselves: while one commits, the next
gathers — no timer, so a lone hit is written at once.

A batch that fails is retried one hit per transaction, so one bad hit (its outbox deleted
since the token was read, say) loses only itself. At most ``max_pending`` hits wait; past that
:meth:`EventWriter.record` refuses at once (the caller answers 503) instead of queueing
without bound behind a slow database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import transaction
from shared.services.tracking import PendingHit, record_hits

log = logging.getLogger(__name__)

Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[bool]"]


class Overloaded(Exception):
    """Too many hits are waiting for the database."""


class EventWriter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int = 500,
        max_pending: int = 20_000,
        record: Callable[..., int] = record_hits,
    ) -> None:
        self._sessions, self._record = sessions, record
        self.max_batch, self.max_pending = max_batch, max_pending
        self._queue: queue.SimpleQueue[tuple[PendingHit, Waiter] | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0  # transactions committed (for tests and metrics)

    async def record(self, hit: PendingHit) -> bool:
        """Store ``hit``; True once committed, False when the database refused it.
        Raises :class:`Overloaded` when too many hits are already waiting."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise Overloaded
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tracking-writer", daemon=True
                )
                self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._queue.put((hit, (loop, done)))
        return await done

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[PendingHit, Waiter]]) -> None:
        hits = [hit for hit, _ in batch]
        try:
            self._commit(hits)
            outcomes = [True] * len(batch)
        except Exception:  # retried one by one below; each failure is logged
            outcomes = [self._write_one(hit) for hit in hits]
        with self._lock:
            self._pending -= len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[bool], bool]]] = {}
        for (_, (loop, future)), ok in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, results)

    def _write_one(self, hit: PendingHit) -> bool:
        try:
            self._commit([hit])
            return True
        except Exception as exc:  # one hit lost, reported; the rest go on
            log.warning(
                "tracking event not recorded (outbox %s): %s",
                hit.link.outbox_id,
                type(exc).__name__,
            )
            return False

    def _commit(self, hits: Sequence[PendingHit]) -> None:
        with transaction(self._sessions) as session:
            self._record(session=session, hits=hits)
        self.batches += 1


def _settle(results: list[tuple[asyncio.Future[bool], bool]]) -> None:
    for future, ok in results:
        if not future.done():  # a request that was cancelled no longer waits
            future.set_result(ok)

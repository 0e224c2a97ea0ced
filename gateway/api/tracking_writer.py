"""Tracking hits resolved and written in batches (§9: the tracking endpoints are cheap).

Requests hand their hit to one thread and wait for the transaction that holds it: that
transaction reads the tokens not known yet (one query for the batch), records every hit of a
known token (one insert for the batch) and commits. A request is answered once its event is
stored, yet a thousand requests cost a handful of transactions instead of a thousand — and a
token seen for the first time, the common case (a reader opens a message once or twice),
costs no query of its own. Batches form by themselves: while one commits, the next gathers —
no timer, so a lone hit is written at once.

A batch that fails is retried one hit per transaction, so one bad hit (its outbox deleted
since the token was read, say) loses only itself. At most ``max_pending`` hits wait; past that
:meth:`HitRecorder.record` refuses at once (the caller answers 503) instead of queueing
without bound behind a slow database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import transaction
from shared.services.tracking import Link, PendingHit, record_hits, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """A request on ``/t/{o,c}/{token}``; ``link`` when the token is known already."""

    token: str
    kind: str  # open | click
    link: Link | None
    method: str
    headers: Mapping[str, str]  # lower-case names
    client_ip: str | None
    at: datetime


@dataclass(frozen=True)
class Outcome:
    link: Link | None  # None: no such token of this kind (404) — or unknown, on ``error``
    error: bool = False  # the database did not take it: nothing recorded


Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Outcome]"]


class Overloaded(Exception):
    """Too many hits are waiting for the database."""


class HitRecorder:
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
        self._queue: queue.SimpleQueue[tuple[Hit, Waiter] | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def record(self, hit: Hit) -> Outcome:
        """Resolve and store ``hit``; answers once committed (or refused). Raises
        :class:`Overloaded` when too many hits are already waiting."""
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
        done: asyncio.Future[Outcome] = loop.create_future()
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

    def _write(self, batch: list[tuple[Hit, Waiter]]) -> None:
        hits = [hit for hit, _ in batch]
        try:
            outcomes = self._commit(hits)
        except Exception:  # retried one by one below; each failure is logged
            outcomes = [self._write_one(hit) for hit in hits]
        with self._lock:
            self._pending -= len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Outcome]]]
        by_loop = {}
        for (_, (loop, future)), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, results)

    def _write_one(self, hit: Hit) -> Outcome:
        try:
            return self._commit([hit])[0]
        except Exception as exc:  # one hit lost, reported; the rest go on
            log.warning("tracking event not recorded: %s", type(exc).__name__)
            return Outcome(hit.link, error=True)

    def _commit(self, hits: Sequence[Hit]) -> list[Outcome]:
        with transaction(self._sessions) as session:
            found = resolve(session, [h.token for h in hits if h.link is None])
            links = [h.link or found.links.get(h.token) for h in hits]
            known = [
                (hit, link)
                for hit, link in zip(hits, links, strict=True)
                if link is not None and link.kind == hit.kind
            ]
            self._record(
                session=session,
                hits=[
                    PendingHit(link, hit.method, hit.headers, hit.client_ip, hit.at)
                    for hit, link in known
                ],
                opted_out=found.opted_out,
            )
        return [
            Outcome(link if link is not None and link.kind == hit.kind else None)
            for hit, link in zip(hits, links, strict=True)
        ]


def _settle(results: list[tuple[asyncio.Future[Outcome], Outcome]]) -> None:
    for future, outcome in results:
        if not future.done():  # a request that was cancelled no longer waits
            future.set_result(outcome)

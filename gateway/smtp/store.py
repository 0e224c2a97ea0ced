"""Durable storage off the event loop, with group commit across concurrent SMTP sessions.

Concurrent DATA commands hand their messages to one writer thread, which stores everything
waiting in a single transaction: one commit (one fsync) answers many sessions, and nobody gets
a 250 before their message is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared.batching import take_batch
from shared.intake import IncomingMessage, store_messages

log = logging.getLogger("inboxlog.gateway")

# Each waiting session's messages, the future its ids go to, and the loop that future is on.
_Ids = list[int | None]
_Pending = tuple[Sequence[IncomingMessage], asyncio.Future[_Ids], asyncio.AbstractEventLoop]


class GroupCommitStore:
    def __init__(self, sessions: sessionmaker[Session], max_batch: int = 128) -> None:
        self.sessions, self.max_batch = sessions, max_batch
        self._q: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="inboxlog-store", daemon=True)
        self._thread.start()

    async def store(self, items: Sequence[IncomingMessage]) -> list[int | None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Ids] = loop.create_future()
        self._q.put((items, fut, loop))
        return await fut

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while (batch := take_batch(self._q, self.max_batch)) is not None:
            self._commit(batch)

    def _insert(self, items: list[IncomingMessage]) -> list[int | None]:
        """One multi-row INSERT and its commit. The store's engine has no pre-ping (a round trip
        per commit): a connection the server dropped while idle fails at the INSERT — before
        anything was written — and the INSERT is tried once more on a fresh connection. A
        failure at COMMIT is never retried: the rows might be in."""
        for attempt in (1, 2):
            session = self.sessions()
            try:
                try:
                    ids = store_messages(session=session, items=items)
                except DBAPIError as exc:
                    if attempt == 1 and exc.connection_invalidated:
                        continue
                    raise
                session.commit()
                return ids
            finally:
                session.close()
        raise AssertionError("unreachable")

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            # One INSERT for every waiting session; SMTP rows have no UID, so the ids come
            # back in the order given and split back per transaction.
            ids = self._insert([item for items, _, _ in batch for item in items])
            results, start = [], 0
            for items, _, _ in batch:
                results.append(ids[start : start + len(items)])
                start += len(items)
        except Exception as exc:
            log.warning("storing %s messages failed: %s", len(batch), type(exc).__name__)
            for _, fut, loop in batch:
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            return
        for (_, fut, loop), ids in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_set_result, fut, ids)


def _set_result(fut: asyncio.Future[_Ids], value: _Ids) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[_Ids], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)

"""Durable storage off the event loop, with group commit across concurrent SMTP sessions.

Concurrent DATA commands hand their messages to one writer thread, which stores everything
waiting in a single transaction: one commit (one fsync) answers many sessions, and nobody gets
a 250 before their message is on disk. The same transaction checks that the account versions
each session's verdicts assumed are still current (directory.py); a session whose are not gets
:class:`StaleFacts` and nothing stored.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gateway.smtp.directory import PG_VERSIONS, read_versions
from shared.batching import take_batch
from shared.intake import IncomingMessage, count_received, store_messages, store_statement

log = logging.getLogger("inboxlog.gateway")

# Each waiting session's messages, the account versions its verdicts assumed, the future its
# ids go to, and the loop that future is on.
_Ids = list[int | None]
Versions = dict[int, int]
_Pending = tuple[
    Sequence[IncomingMessage], Versions | None, asyncio.Future[_Ids], asyncio.AbstractEventLoop
]


class StaleFacts(Exception):
    """An account changed since the facts a verdict was made from: nothing was stored; judge
    again on fresh facts."""


class GroupCommitStore:
    def __init__(self, sessions: sessionmaker[Session], max_batch: int = 128) -> None:
        self.sessions, self.max_batch = sessions, max_batch
        self._q: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inboxlog-store", daemon=True)
        self._thread.start()

    async def store(
        self, items: Sequence[IncomingMessage], assumed: Versions | None = None
    ) -> list[int | None]:
        """Store ``items`` durably; with ``assumed``, only if each account's config version is
        still the one given, read in the storing transaction (else :class:`StaleFacts`)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Ids] = loop.create_future()
        self._q.put((items, assumed, fut, loop))
        return await fut

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while (batch := take_batch(self._q, self.max_batch)) is not None:
            self._commit(batch)

    def _insert(self, batch: list[_Pending]) -> list[_Ids | None]:
        """One transaction: the versions the batch assumed, checked; one multi-row INSERT of
        the messages whose assumptions hold (None in place of those whose do not); COMMIT.

        The store's engine has no pre-ping (a round trip per commit): a connection the server
        dropped while idle fails at the first statement — before anything was written — and
        the transaction is tried once more on a fresh connection. A failure at COMMIT is never
        retried: the rows might be in."""
        engine = self.sessions.kw.get("bind")
        pipelined = isinstance(engine, sa.Engine) and engine.dialect.name == "postgresql"
        for attempt in (1, 2):
            try:
                if pipelined:
                    assert isinstance(engine, sa.Engine)
                    results = self._insert_pipelined(engine, batch)
                    if results is not None:
                        return results
                return self._insert_checked(batch)
            except _Unwritten as exc:
                if attempt == 2 or not exc.error.connection_invalidated:
                    raise exc.error from exc
        raise AssertionError("unreachable")

    def _insert_checked(self, batch: list[_Pending]) -> list[_Ids | None]:
        """Versions read first, then only what holds is inserted."""
        with self.sessions() as session:
            try:
                held = self._holding(session.connection(), batch)
                kept = [i for (m, *_), ok in zip(batch, held, strict=True) if ok for i in m]
                ids = store_messages(session=session, items=kept)
            except DBAPIError as exc:
                raise _Unwritten(exc) from exc
            session.commit()
        return _split(batch, held, ids)

    def _insert_pipelined(
        self, engine: sa.Engine, batch: list[_Pending]
    ) -> list[_Ids | None] | None:
        """PostgreSQL, the usual case: BEGIN, the version read and the INSERT go in one
        pipeline (one round trip), then COMMIT — half the round trips of ``_insert_checked``,
        to which a batch with a stale assumption (rare) is left: None, nothing written."""
        import psycopg

        items = [i for m, *_ in batch for i in m]
        wanted = sorted({a for _, assumed, _, _ in batch if assumed for a in assumed})
        with engine.connect() as conn:
            dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
            sql, params = store_statement(conn.dialect, items)
            try:
                with dbapi.pipeline():
                    versions = dbapi.cursor()
                    if wanted:
                        versions.execute(PG_VERSIONS, (wanted,))
                    insert = dbapi.cursor()
                    insert.executemany(sql, params, returning=True)
                current = {a: v for a, v in versions.fetchall()} if wanted else {}
                ids: list[int | None] = []
                while True:
                    row = insert.fetchone()
                    ids.append(row[0] if row is not None else None)
                    if not insert.nextset():
                        break
            except psycopg.Error as exc:
                lost = bool(dbapi.closed or dbapi.broken)
                if lost:
                    conn.invalidate(exc)
                # As SQLAlchemy raises it; the parameters (message bytes) never in the text.
                error = DBAPIError.instance(
                    sql, None, exc, psycopg.Error, hide_parameters=True, connection_invalidated=lost
                )
                raise _Unwritten(cast(DBAPIError, error)) from exc
            if not all(_holds(assumed, current) for _, assumed, _, _ in batch):
                dbapi.rollback()
                return None
            dbapi.commit()
        count_received(items, ids)
        return _split(batch, [True] * len(batch), ids)

    @staticmethod
    def _holding(conn: sa.Connection, batch: list[_Pending]) -> list[bool]:
        """Per waiting session, whether the versions it assumed are current."""
        wanted = sorted({a for _, assumed, _, _ in batch if assumed for a in assumed})
        current = read_versions(conn, wanted) if wanted else {}
        return [_holds(assumed, current) for _, assumed, _, _ in batch]

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = self._insert(batch)
        except Exception as exc:
            log.warning("storing %s messages failed: %s", len(batch), type(exc).__name__)
            for *_, fut, loop in batch:
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            return
        for (*_, fut, loop), ids in zip(batch, results, strict=True):
            if ids is None:
                loop.call_soon_threadsafe(_set_exception, fut, StaleFacts())
            else:
                loop.call_soon_threadsafe(_set_result, fut, ids)


class _Unwritten(Exception):
    """A failure before COMMIT: nothing of the batch was written."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


def _holds(assumed: Versions | None, current: Versions) -> bool:
    return assumed is None or all(current.get(a) == v for a, v in assumed.items())


def _split(batch: list[_Pending], held: list[bool], ids: list[int | None]) -> list[_Ids | None]:
    """The ids back per waiting session, in the order given (SMTP rows have no UID, so none is
    skipped); None for a session whose assumptions did not hold."""
    results: list[_Ids | None] = []
    start = 0
    for (messages, *_), ok in zip(batch, held, strict=True):
        results.append(ids[start : start + len(messages)] if ok else None)
        start += len(messages) if ok else 0
    return results


def _set_result(fut: asyncio.Future[_Ids], value: _Ids) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[_Ids], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)

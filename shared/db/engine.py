"""Engines and sessions for SQLite (embedded) and PostgreSQL, with the same code on both."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the SMTP gateway answers 250.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# PostgreSQL session limits: the longest any statement waits for a lock, and the longest a
# transaction may sit idle (a process stuck between statements) before the server ends it.
LOCK_TIMEOUT_MS = 15_000
IDLE_IN_TRANSACTION_MS = 120_000


def make_engine(
    url: str,
    *,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    idle_ms: int = IDLE_IN_TRANSACTION_MS,
    **kwargs: Any,
) -> sa.Engine:
    # Statement parameters are mail (raw bytes, subjects, addresses): never in error texts.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take the write lock up front so
        # concurrent writers queue on busy_timeout instead of failing on lock upgrade.
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))

        @sa.event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    # Every lock wait is bounded, and a transaction left open by a stuck process is ended
    # (§6 Isolation): a wait past these is an error the caller retries, never a hang.
    connect_args = dict(kwargs.pop("connect_args", {}))
    options = connect_args.get("options", "")
    for name, value in (
        ("lock_timeout", lock_timeout_ms),
        ("idle_in_transaction_session_timeout", idle_ms),
    ):
        if f"{name}=" not in options:
            options += f" -c {name}={int(value)}"
    connect_args["options"] = options.strip()
    kwargs["connect_args"] = connect_args
    # A pre-ping round trip per checkout hides a restarted server from request handlers; the
    # worker turns it off (a dead connection there is a transient error it retries anyway).
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return sa.create_engine(url, **kwargs)


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def single_read(factory: sessionmaker[Session]) -> Iterator[sa.Connection]:
    """A connection for one read that needs no transaction around it: on PostgreSQL in
    autocommit, so the read is one round trip (no BEGIN, no ROLLBACK, no Session); on SQLite an
    ordinary session (the engine's BEGIN IMMEDIATE hook must not run outside a transaction)."""
    engine = factory.kw.get("bind")
    if isinstance(engine, sa.Engine) and engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
        return
    with factory() as session:
        yield session.connection()


@contextmanager
def single_write(factory: sessionmaker[Session]) -> Iterator[sa.Connection]:
    """A connection for one statement that commits on its own: on PostgreSQL in autocommit
    (one round trip: no BEGIN, no COMMIT, no Session); on SQLite one short transaction (the
    engine's BEGIN IMMEDIATE, the statement, COMMIT)."""
    engine = factory.kw.get("bind")
    assert isinstance(engine, sa.Engine)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
        return
    with engine.begin() as conn:
        yield conn


def rowcount(result: sa.Result[Any]) -> int:
    """The rows an UPDATE or DELETE run through ``Session.execute`` matched: its result is a
    CursorResult, though SQLAlchemy types it as any Result."""
    assert isinstance(result, sa.CursorResult)
    return result.rowcount

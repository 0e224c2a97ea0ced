"""Fresh, migrated databases for a test run: a SQLite file and a new PostgreSQL database."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from shared.db.migrate import upgrade

PG_ADMIN_DSN = os.environ.get("INBOXLOG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """Create an empty database, migrate it, and drop it afterwards."""
    name = f"inboxlog_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_url(name)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_sqlite(directory: Path) -> Iterator[str]:
    url = f"sqlite:///{directory / 'inboxlog-test.db'}"
    upgrade(url)
    yield url

"""Alembic environment: runs migrations on the connection or URL handed over by ``migrate.py``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

import shared.db.models  # noqa: F401  (registers every table)
from shared.db.base import Base
from shared.db.engine import make_engine

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "migrate.py's alembic_config always sets sqlalchemy.url"
    engine = make_engine(url)
    with engine.connect() as conn:
        _run_on(conn)
    engine.dispose()


def _run_on(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()

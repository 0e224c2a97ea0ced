"""§6 Isolation: every lock wait is bounded — a PostgreSQL session of ours gives up waiting for
a lock after its lock_timeout, and a transaction left idle is ended by the server."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from shared.db.engine import LOCK_TIMEOUT_MS, make_engine


def test_every_session_has_bounded_lock_waits_and_idle_transactions(postgresql_url: str) -> None:
    engine = make_engine(postgresql_url)
    with engine.connect() as conn:
        got = conn.execute(
            sa.text(
                "SELECT current_setting('lock_timeout'), "
                "current_setting('idle_in_transaction_session_timeout')"
            )
        ).one()
    engine.dispose()
    assert got == (f"{LOCK_TIMEOUT_MS // 1000}s", "2min")


def test_a_lock_wait_ends_in_an_error_not_a_hang(postgresql_url: str) -> None:
    holder = make_engine(postgresql_url)
    waiter = make_engine(postgresql_url, lock_timeout_ms=300)
    with holder.connect() as a, a.begin():
        a.execute(sa.text("SELECT pg_advisory_xact_lock(4242, 1)"))
        t0 = time.monotonic()
        with pytest.raises(sa.exc.OperationalError), waiter.connect() as b, b.begin():
            b.execute(sa.text("SELECT pg_advisory_xact_lock(4242, 1)"))
        assert time.monotonic() - t0 < 10  # 300 ms asked; a loaded machine's margin
    holder.dispose()
    waiter.dispose()

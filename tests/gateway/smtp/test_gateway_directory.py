"""The gateway answers from a cache the database keeps honest (§6): a change made through the
API is in force for SMTP as soon as the API has answered, and the gateway's load on the database
grows with changes and mail, never with the number of accounts."""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.smtp.directory import Directory
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import User
from shared.services import accounts
from tests.conftest import make_settings
from tests.e2e.mail import message
from tests.support.inproc_gateway import InProcessGateway
from tests.support.world import World, new_world


@pytest.fixture(scope="module")
def engine(postgresql_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(postgresql_url)
    yield engine
    engine.dispose()


@pytest.fixture
def gw(postgresql_url: str, tmp_path: Path, engine: sa.Engine) -> Iterator[InProcessGateway]:
    # The gateway has an engine of its own, so its statements can be counted apart.
    own = make_engine(postgresql_url)
    g = InProcessGateway(
        make_settings(postgresql_url, tmp_path), make_session_factory(own), sender=None
    )
    g.engine = own  # type: ignore[attr-defined]
    yield g
    g.close()
    own.dispose()


def send(g: InProcessGateway, raw: bytes, rcpt: str, mail_from: str = "x@y.example") -> int:
    with smtplib.SMTP("127.0.0.1", g.port, timeout=30) as s:
        s.ehlo("client.example")
        assert s.mail(mail_from)[0] == 250
        code, _ = s.rcpt(rcpt)
        if code != 250:
            return code
        return s.data(raw)[0]


def test_a_just_created_sender_and_inbox_get_250_at_once_under_4_parallel_clients(
    gw: InProcessGateway, engine: sa.Engine
) -> None:
    world = new_world(make_session_factory(engine))
    send(gw, message("alice@ours.example", ["ken@acme.example"]), world.bcc)  # warm the cache

    def scenario(n: int) -> list[tuple[str, int]]:
        got = []
        for i in range(5):
            email = f"new{n}-{i}@ours.example"
            world.user(email)  # committed: the API would answer now
            got.append((email, send(gw, message(email, ["ken@acme.example"]), world.bcc)))
            _, team = world.inbox(f"Inbox {n}-{i}", [world.admin_id])
            got.append((team, send(gw, message("cust@cust.example", ["s@ours.example"]), team)))
        return got

    with ThreadPoolExecutor(4) as pool:
        results = [r for rs in pool.map(scenario, range(4)) for r in rs]
    assert [r for r in results if r[1] != 250] == []
    assert len(results) == 40


def test_a_deactivation_and_a_stricter_policy_are_in_force_at_once(
    gw: InProcessGateway, engine: sa.Engine
) -> None:
    world = new_world(make_session_factory(engine))
    bob = world.user("bob@ours.example")
    raw = message("bob@ours.example", ["ken@acme.example"])
    assert send(gw, raw, world.bcc) == 250  # cached now
    with transaction(world.sessions) as s:
        s.get(User, bob).active = False  # type: ignore[union-attr]
        accounts.bump_config_version(session=s, account_id=world.account_id)
    assert send(gw, raw, world.bcc) == 550
    alice = message("alice@ours.example", ["ken@acme.example"])
    assert send(gw, alice, world.bcc) == 250
    world.settings(sender_verification="dkim")  # unsigned mail is refused from now on
    assert send(gw, alice, world.bcc) == 550
    # The verdicts made on cached facts were caught by the store's version check, which
    # stored nothing for them: only the two 250s are stored.
    assert len(world.stored()) == 2


class Counted:
    """Statements and rows the gateway's engines (its store's and its directory's) send and
    read."""

    def __init__(self, g: InProcessGateway) -> None:
        self.statements = self.rows = 0
        self.engines = {
            g.engine,  # type: ignore[attr-defined]
            g.directory.sessions.kw["bind"],
            g.store.sessions.kw["bind"],
        }
        self._lock = threading.Lock()

    def __enter__(self) -> Counted:
        for engine in self.engines:
            sa.event.listen(engine, "after_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: Any) -> None:
        for engine in self.engines:
            sa.event.remove(engine, "after_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        with self._lock:
            self.statements += 1
            if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
                self.rows += cursor.rowcount


def test_load_grows_with_mail_and_changes_not_with_accounts(
    gw: InProcessGateway, engine: sa.Engine
) -> None:
    sessions = make_session_factory(engine)
    for _ in range(150):  # many other accounts
        new_world(sessions)
    world = new_world(sessions)
    raw = message("alice@ours.example", ["ken@acme.example"])
    with Counted(gw) as first:
        assert send(gw, raw, world.bcc) == 250
    with Counted(gw) as steady:
        for _ in range(10):
            assert send(gw, raw, world.bcc) == 250
    # First message: route lookup, version read, one account's facts, the insert.
    assert first.rows < 20, first.rows
    # Then per message: the version read (in the store's transaction) and the insert;
    # nothing about the other accounts.
    assert steady.rows <= 10 * 2, steady.rows
    assert steady.statements <= 10 * 6, steady.statements
    # A dictionary attack on the logging domain: one indexed lookup per made-up address, once.
    guesses = [f"log-guess{i}@log.localhost" for i in range(30)]
    with Counted(gw) as attack, smtplib.SMTP("127.0.0.1", gw.port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("x@y.example")
        for address in guesses * 2:
            assert s.rcpt(address)[0] == 550
        assert s.rcpt("someone@elsewhere.example")[0] == 550  # not ours: no lookup at all
    assert attack.statements == 30 and attack.rows == 0


def test_a_slow_reload_never_replaces_newer_facts(engine: sa.Engine) -> None:
    """Two DATA checks race: the one that read the older version finishes last."""
    sessions = make_session_factory(engine)
    world: World = new_world(sessions)
    directory = Directory(sessions, "log.localhost")
    old = directory.current_facts({world.account_id})[world.account_id]
    release, loading = threading.Event(), threading.Event()
    import gateway.smtp.directory as module

    real = module.load_account_facts

    def slow(session, account, domain):  # type: ignore[no-untyped-def]
        facts = real(session, account, domain)
        if not loading.is_set():
            loading.set()
            release.wait(30)
        return facts

    world.user("carol@ours.example")  # version +1: the first reload starts and stalls
    module.load_account_facts = slow  # type: ignore[assignment]
    try:
        first = threading.Thread(target=directory.current_facts, args=({world.account_id},))
        first.start()
        assert loading.wait(30)
        world.user("dave@ours.example")  # version +2, read by a second check that finishes
        newest = directory.current_facts({world.account_id})[world.account_id]
        release.set()
        first.join(30)
    finally:
        module.load_account_facts = real  # type: ignore[assignment]
    after = directory.current_facts({world.account_id})[world.account_id]
    assert newest.user_by_address("dave@ours.example") is not None
    assert after.user_by_address("dave@ours.example") is not None
    assert old.user_by_address("carol@ours.example") is None


def test_connections_the_server_dropped_cost_no_mail(
    gw: InProcessGateway, engine: sa.Engine
) -> None:
    """The version read holds its connection and the store's have no pre-ping: when PostgreSQL
    drops them all between two messages (a restart, an idle timeout), the next DATA is still
    answered 250 and stored once."""
    world = new_world(make_session_factory(engine))
    assert send(gw, message("alice@ours.example", ["ken@acme.example"]), world.bcc) == 250
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert killed >= 2  # the held version-read connection and the store's
    assert send(gw, message("alice@ours.example", ["bob@acme.example"]), world.bcc) == 250
    assert len(world.stored()) == 2

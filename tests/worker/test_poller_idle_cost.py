"""An idle mailbox costs the database nothing of its own (§8), and a change still reaches it.

A real poller holds a few mailboxes of a private Dovecot in IDLE. Once they are in sync, every
statement is counted by the thread that ran it: the connections' own threads run none, and the
poller's scans read all of them in one query each. A setting changed through the service layer
bumps the row's control version, which the next scan hands to that connection alone.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Connection
from shared.netsafety import parse_networks
from shared.services import connections
from tests.support.databases import fresh_postgres, fresh_sqlite
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.stack import wait_for
from tests.support.world import World, new_world
from worker.imap.poller import Poller
from worker.imap.session import PollerConfig

MAILBOXES = 4


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot"))
    server = make()
    for i in range(MAILBOXES):
        server.add_user(f"idle{i}@ours.example", f"pw-{i}")
    yield server
    cleanup()


class Statements:
    """Statements run on an engine, by the name of the thread that ran them."""

    def __init__(self) -> None:
        self.by_thread: collections.Counter[str] = collections.Counter()
        self.scans = 0
        self.lock = threading.Lock()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        with self.lock:
            self.by_thread[threading.current_thread().name] += 1
            if "connections.control_version" in statement and "lease_owner" in statement:
                self.scans += 1


@pytest.fixture(params=["sqlite", "postgresql"])
def world_and_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[World, sa.Engine, sessionmaker[Session]]]:
    """A database of this test's own: a poller takes every connection it finds."""
    fresh = fresh_sqlite(tmp_path) if request.param == "sqlite" else fresh_postgres()
    with fresh as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        yield new_world(sessions), engine, sessions
        engine.dispose()


def test_idle_mailboxes_run_no_query_and_a_change_reaches_only_its_own(
    world_and_engine: tuple[World, sa.Engine, sessionmaker[Session]], dovecot: DovecotServer
) -> None:
    world, engine, sessions = world_and_engine
    box = SecretBox(Fernet.generate_key().decode())
    host, port = dovecot.address
    cids = []
    for i in range(MAILBOXES):
        address = f"idle{i}@ours.example"
        imap = {"host": host, "port": port, "security": "none", "username": address,
                "password": f"pw-{i}"}  # fmt: skip
        inbox_id, _ = world.inbox(f"Idle {i}", [world.admin_id])
        cids.append(world.connect(address, kind="team", inbox_id=inbox_id, imap=imap, box=box))
    config = PollerConfig(allowed_networks=parse_networks("127.0.0.0/8"), poll_seconds=600)
    poller = Poller(sessions, box, on_stored=lambda ids: None, config=config, scan_interval=0.2)
    runner = threading.Thread(target=poller.run, name="poller-scans", daemon=True)
    runner.start()
    counted = Statements()
    try:
        wait_for(
            lambda: (
                len(poller.threads) == MAILBOXES and all(t.in_sync for t in poller.threads.values())
            ),
            60,
        )
        sa.event.listen(engine, "before_cursor_execute", counted)
        wait_for(lambda: counted.scans >= 15, 60)  # three seconds of scans, at least one renewal
        sa.event.remove(engine, "before_cursor_execute", counted)
        mailbox_threads = {t.name for t in poller.threads.values()}
        assert not (set(counted.by_thread) & mailbox_threads), counted.by_thread
        assert set(counted.by_thread) == {"poller-scans"}
        # One read per scan (SQLite adds its BEGIN), and a renewal's few statements at most twice.
        assert counted.by_thread["poller-scans"] <= 2 * counted.scans + 2 * 4

        # A new set of folders for one connection: its version moves, its thread alone reads it.
        changed, untouched = poller.threads[cids[0]], poller.threads[cids[1]]
        versions = {cid: t.control_version for cid, t in poller.threads.items()}
        with transaction(sessions) as s:
            connections.update_connection(
                session=s, principal=world.admin, box=box, connection_id=cids[0],
                imap={"folders": ["INBOX"]}, meetings=None,
            )  # fmt: skip
        wait_for(lambda: poller.threads.get(cids[0]) is not None
                 and poller.threads[cids[0]].control_version > versions[cids[0]], 30)  # fmt: skip
        assert untouched.control_version == versions[cids[1]]
        assert changed is poller.threads[cids[0]]  # the same thread, a new session
    finally:
        poller.stop()
        runner.join(30)
    assert not runner.is_alive()


def test_only_watched_settings_move_the_control_version(
    world_and_engine: tuple[World, sa.Engine, sessionmaker[Session]],
) -> None:
    world, _, sessions = world_and_engine
    box = SecretBox(Fernet.generate_key().decode())
    imap = {"host": "imap.example.com", "port": 993, "security": "ssl", "username": "u",
            "password": "p"}  # fmt: skip
    inbox_id, _ = world.inbox("Watched", [world.admin_id])
    cid = world.connect("watched@ours.example", kind="team", inbox_id=inbox_id, imap=imap, box=box)

    def version() -> int:
        with sessions() as s:
            return s.scalars(
                sa.select(Connection.control_version).where(Connection.id == cid)
            ).one()

    start = version()
    with transaction(sessions) as s:  # the poller's own bookkeeping: not a change to act on
        conn = s.get(Connection, cid)
        assert conn is not None
        conn.status, conn.last_sync_at, conn.last_error = "active", conn.created_at, None
    assert version() == start
    with transaction(sessions) as s:
        connections.update_connection(
            session=s, principal=world.admin, box=box, connection_id=cid,
            imap={"password": "new"}, meetings=None,
        )  # fmt: skip
    assert version() == start + 1
    with transaction(sessions) as s:
        connections.request_sync(session=s, principal=world.admin, connection_id=cid, since=None)
    assert version() == start + 2

"""Mail that lands between two IMAP commands of an idle connection is seen at once (§6: new mail
within 5 s), not at the next poll cycle.

With IDLE on INBOX, a connection leaves IDLE every few seconds to STATUS its other folders
(\\Sent), and enters IDLE again after a SELECT. A message delivered to INBOX while the
connection is outside IDLE is announced by the server as an untagged EXISTS in the answer to
whatever command runs then — not by IDLE, which only reports what happens after it starts.
These tests deliver a message exactly in each such window (a real Dovecot; the delivery is
made from inside the command's wrapper, before the command is sent) and expect it stored long
before the poll interval, which is set to ten minutes so that a missed EXISTS cannot hide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from imapclient import IMAPClient
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Connection
from shared.netsafety import parse_networks
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.stack import wait_for
from tests.support.world import new_world
from worker.imap import leases
from worker.imap import session as session_module
from worker.imap.session import ConnectionSync, PollerConfig

USER, PASSWORD = "windows@ours.example", "pw-windows"
NEVER = 600.0  # the poll/renew interval: a message that waits for it fails the test


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot"))
    server = make()
    server.add_user(USER, PASSWORD)
    yield server
    cleanup()


@pytest.fixture
def sessions(postgresql_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(postgresql_url)
    yield make_session_factory(engine)
    engine.dispose()


def message(n: int) -> bytes:
    return (
        f"From: customer{n}@example.net\r\nTo: {USER}\r\nSubject: window {n}\r\n"
        f"Message-ID: <window-{n}-{id(object())}@example.net>\r\n\r\nhello {n}\r\n"
    ).encode()


class Run:
    """One connection's thread against the private Dovecot; ``stored`` counts what it stored."""

    def __init__(self, sessions: sessionmaker[Session], dovecot: DovecotServer) -> None:
        box = SecretBox(Fernet.generate_key().decode())
        world = new_world(sessions)
        host, port = dovecot.address
        with transaction(sessions) as s:
            c = Connection(
                account_id=world.account_id,
                address=f"windows-{id(self)}@ours.example",
                kind="personal",
                user_id=world.admin_id,
                status="pending",
                imap_host=host,
                imap_port=port,
                imap_security="none",
                imap_username=USER,
                imap_password_enc=box.encrypt(PASSWORD),
            )
            s.add(c)
            s.flush()
            cid = c.id
        self.sessions = sessions
        assert leases.claim(sessions, cid, "test", NEVER)  # sync stores only under a lease
        self.stored: list[int] = []
        self.changed = threading.Condition()
        config = PollerConfig(
            poll_seconds=NEVER,
            idle_renew_seconds=NEVER,
            allowed_networks=parse_networks("127.0.0.0/8"),
        )
        self.sync = ConnectionSync(
            cid, sessions=sessions, box=box, owner="test", config=config, on_stored=self._stored
        )

    def status(self) -> str:
        with self.sessions() as s:
            c = s.get(Connection, self.sync.connection_id)
            assert c is not None
            return c.status

    def _stored(self, ids: list[int]) -> None:
        with self.changed:
            self.stored.extend(ids)
            self.changed.notify_all()

    def wait_stored(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.stored) >= count, timeout)


def deliver_once_before(
    dovecot: DovecotServer, armed: threading.Event, call: Callable[..., Any]
) -> Callable[..., Any]:
    """``call``, but the first time it runs once ``armed`` is set, a message is delivered to
    INBOX just before — the command then runs with that mail already in the folder."""
    delivered = threading.Event()

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if armed.is_set() and not delivered.is_set():
            delivered.set()
            dovecot.append(USER, "INBOX", message(2))
        return call(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("window", ["other_folders_status", "select_before_idle"])
def test_mail_between_two_commands_is_logged_at_once(
    sessions: sessionmaker[Session],
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
    window: str,
) -> None:
    armed = threading.Event()
    if window == "other_folders_status":
        # The STATUS of \Sent between two IDLEs (every few seconds while idle).
        monkeypatch.setattr(
            session_module, "_changed", deliver_once_before(dovecot, armed, session_module._changed)
        )
    else:
        # The IDLE command right after the SELECT that checked INBOX was unchanged.
        monkeypatch.setattr(
            IMAPClient, "idle", deliver_once_before(dovecot, armed, IMAPClient.idle)
        )
    run = Run(sessions, dovecot)
    dovecot.append(USER, "INBOX", message(0))  # before the connection: not imported
    run.sync.start()
    try:
        # The first cycle has run once the connection is active; then one message by IDLE.
        wait_for(lambda: run.status() == "active", 30)
        dovecot.append(USER, "INBOX", message(1))
        assert run.wait_stored(1, 30), "the first message was not stored"
        armed.set()
        assert run.wait_stored(2, 30), f"mail delivered in the {window} window waited"
    finally:
        run.sync.stop()
        run.sync.join(30)
    assert not run.sync.is_alive()


def test_the_fixture_window_is_real(dovecot: DovecotServer, tmp_path: Path) -> None:
    """The premise: Dovecot announces mail that arrived outside IDLE in the answer to the
    next command (here STATUS of another folder), and IDLE started after it reports nothing."""
    host, port = dovecot.address
    with IMAPClient(host, port=port, ssl=False, timeout=10) as client:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        dovecot.append(USER, "INBOX", message(3))
        client.folder_status("Sent", [b"UIDNEXT"])
        client.idle()
        try:
            assert client.idle_check(timeout=1) == []
        finally:
            client.idle_done()
        assert "EXISTS" in client._imap.untagged_responses

"""Faults injected into a running stack, and the outcome counted: a stopped broker, a stopped
PostgreSQL, a worker killed again and again, an IMAP server that is slow or cuts FETCH."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.crypto import SecretBox
from shared.db.migrate import upgrade
from shared.db.models import Decision, FolderState, LoggedEmail, StoredMessage
from tests.e2e.mail import message
from tests.e2e.test_intake_durability import flood
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.imap_faults import FaultProxy
from tests.support.servers import PrivatePostgres, PrivateRedis
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for
from tests.support.world import World, new_world


def count(stack: Stack, model: type, account_id: int) -> int:
    with stack.sessions() as s:
        return s.scalar(
            sa.select(sa.func.count()).select_from(model).where(model.account_id == account_id)
        )


def test_broker_stopped_intake_goes_on_and_everything_is_logged_after(
    postgresql_url: str, tmp_path: Path
) -> None:
    broker = PrivateRedis(tmp_path).start()
    stack = make_stack(tmp_path, postgresql_url, broker.url)
    try:
        stack.start_gateway()
        stack.start_worker()
        world = new_world(stack.sessions)
        broker.stop()  # stopped, not emptied
        flood(stack, world, 60, sessions=3, tag="brk")  # every one answered 250
        assert count(stack, StoredMessage, world.account_id) == 60
        time.sleep(2)
        assert count(stack, Decision, world.account_id) == 0
        broker.start()
        wait_for(
            lambda: count(stack, Decision, world.account_id) >= 60, 90, lambda: stack.log("worker")
        )
        assert (
            count(stack, LoggedEmail, world.account_id),
            count(stack, Decision, world.account_id),
        ) == (60, 60)
    finally:
        stack.close()
        broker.stop()


def test_worker_killed_repeatedly_during_a_2000_message_flood(
    postgresql_url: str, tmp_path: Path
) -> None:
    stack = make_stack(tmp_path, postgresql_url, redis_broker_url())
    try:
        stack.start_gateway()
        stack.start_worker()
        world = new_world(stack.sessions)
        sender = threading.Thread(target=flood, args=(stack, world, 2000, 8, "k3"))
        sender.start()
        kills = 0
        for threshold in (200, 700, 1200):
            wait_for(
                lambda t=threshold: count(stack, Decision, world.account_id) >= t,
                120,
                lambda: stack.log("worker"),
            )
            stack.kill("worker")
            kills += 1
            stack.start_worker()
        sender.join(300)
        wait_for(
            lambda: count(stack, Decision, world.account_id) >= 2000,
            240,
            lambda: stack.log("worker"),
        )
        assert kills == 3
        assert (
            count(stack, StoredMessage, world.account_id),
            count(stack, LoggedEmail, world.account_id),
            count(stack, Decision, world.account_id),
        ) == (2000, 2000, 2000)
    finally:
        stack.close()


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-fault"))
    yield make()
    cleanup()


def _connect(stack: Stack, world: World, host_port: tuple[str, int], user: str, **imap) -> int:  # type: ignore[no-untyped-def]
    inbox_id, _ = world.inbox(f"T-{user}", [world.admin_id])
    return world.connect(
        f"{user}@ours.example",
        kind="team",
        inbox_id=inbox_id,
        box=SecretBox(stack.env["INBOXLOG_SECRET_KEY"]),
        imap={
            "host": host_port[0],
            "port": host_port[1],
            "security": "none",
            "username": user,
            "password": "pw-" + user,
            **imap,
        },
    )


def _stored(stack: Stack, cid: int) -> int:
    with stack.sessions() as s:
        return s.scalar(
            sa.select(sa.func.count())
            .select_from(StoredMessage)
            .where(StoredMessage.connection_id == cid)
        )


def test_postgres_down_451_pollers_hold_cursors_workers_retry(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    pg = PrivatePostgres().init().start()
    upgrade(pg.url)
    stack = make_stack(
        tmp_path,
        pg.url,
        redis_broker_url(),
        INBOXLOG_POLL_SECONDS="2",
        INBOXLOG_POLLER_LEASE_SECONDS="3",
    )
    try:
        dovecot.add_user("pgdown", "pw-pgdown")
        world = new_world(stack.sessions)
        cid = _connect(stack, world, dovecot.address, "pgdown")
        stack.start_gateway()
        stack.start_worker()
        stack.start("poller", "poller")
        wait_for(lambda: _state(stack, cid) is not None, 30, lambda: stack.log("poller"))
        before = _state(stack, cid)
        flood(stack, world, 20, sessions=2, tag="pre")
        pg.stop()
        raw = message("alice@ours.example", ["ken@acme.co.jp"], message_id="<during@x.example>")
        with pytest.raises(smtplib.SMTPDataError) as err:
            stack.send(raw, [world.bcc], "alice@ours.example")
        assert err.value.smtp_code == 451
        for i in range(10):
            dovecot.append(
                "pgdown",
                "INBOX",
                message(
                    f"c{i}@cust.example",
                    ["pgdown@ours.example"],
                    message_id=f"<pgdown-{i}@cust.example>",
                ),
            )
        time.sleep(4)  # pollers and workers meet the outage
        pg.start()
        stack.sessions.kw["bind"].dispose()  # the test's own pooled connections died with it
        assert stack.send(raw, [world.bcc], "alice@ours.example") == {}  # the client's retry
        wait_for(
            lambda: count(stack, Decision, world.account_id) >= 31,
            120,
            lambda: stack.log("worker") + stack.log("poller"),
        )
        assert _stored(stack, cid) == 10
        assert (
            count(stack, StoredMessage, world.account_id),
            count(stack, LoggedEmail, world.account_id),
            count(stack, Decision, world.account_id),
        ) == (31, 31, 31)
        assert _state(stack, cid)[1] >= before[1] + 10
    finally:
        stack.close()
        pg.close()


def _state(stack: Stack, cid: int) -> tuple[int, int] | None:
    try:
        with stack.sessions() as s:
            row = s.scalar(
                sa.select(FolderState).where(
                    FolderState.connection_id == cid, FolderState.name == "INBOX"
                )
            )
            return (row.uidvalidity, row.last_uid) if row and row.uidvalidity else None
    except sa.exc.OperationalError:
        return None


def test_slow_or_cut_imap_server_does_not_hold_up_the_others(
    postgresql_url: str, tmp_path: Path, dovecot: DovecotServer
) -> None:
    stack = make_stack(
        tmp_path,
        postgresql_url,
        redis_broker_url(),
        INBOXLOG_POLL_SECONDS="2",
        INBOXLOG_POLLER_LEASE_SECONDS="3",
        INBOXLOG_IMAP_FETCH_BATCH="20",
    )
    proxy = FaultProxy(dovecot.address).start()
    try:
        stack.start_worker()
        world = new_world(stack.sessions)
        for user in ("faulty", "healthy"):
            dovecot.add_user(user, "pw-" + user)
        big = [
            message(
                f"c{i}@cust.example",
                ["faulty@ours.example"],
                body="y" * 30000,
                message_id=f"<faulty-{i}@cust.example>",
            )
            for i in range(200)
        ]
        dovecot.bulk_load("faulty", "INBOX", big)
        faulty = _connect(stack, world, proxy.address, "faulty", since=date.today().isoformat())
        healthy = _connect(stack, world, dovecot.address, "healthy")
        proxy.delay(0.5)  # a slow server
        stack.start("poller", "poller")
        wait_for(lambda: _state(stack, healthy) is not None, 30, lambda: stack.log("poller"))
        for i in range(5):
            dovecot.append(
                "healthy", "INBOX", message(f"h{i}@cust.example", ["healthy@ours.example"])
            )
        wait_for(lambda: _stored(stack, healthy) == 5, 15, lambda: stack.log("poller"))
        assert _stored(stack, faulty) < 200  # the slow one is still going
        proxy.drop_after_bytes(150_000)  # now it cuts the connection mid-FETCH
        wait_for(lambda: "sync error" in stack.log("poller"), 60, lambda: stack.log("poller"))
        proxy.pass_through()
        wait_for(lambda: _stored(stack, faulty) >= 200, 120, lambda: stack.log("poller"))
        with stack.sessions() as s:
            distinct = s.scalar(
                sa.select(sa.func.count(sa.distinct(StoredMessage.uid))).where(
                    StoredMessage.connection_id == faulty
                )
            )
        assert (_stored(stack, faulty), distinct) == (200, 200)
        wait_for(lambda: count(stack, Decision, world.account_id) >= 205, 120)
        assert count(stack, LoggedEmail, world.account_id) == 205
    finally:
        stack.close()
        proxy.stop()

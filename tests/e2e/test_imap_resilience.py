"""IMAP pollers under failure: SIGKILL mid-batch, two pollers sharing connections, a restarted
Dovecot, round-robin fairness with two workers, and the backfill command."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from shared.crypto import SecretBox
from shared.db.models import (
    Connection,
    Conversation,
    Decision,
    FolderState,
    LoggedEmail,
    StoredMessage,
)
from tests.e2e.mail import message
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for
from tests.support.world import World, new_world

_users = itertools.count(1)


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-r"))
    yield make()
    cleanup()


@pytest.fixture
def stack(postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(
        tmp_path_factory.mktemp("imapres"),
        postgresql_url,
        redis_broker_url(),
        INBOXLOG_POLL_SECONDS="2",
        INBOXLOG_POLLER_LEASE_SECONDS="3",
        INBOXLOG_IMAP_FETCH_BATCH="25",
        INBOXLOG_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8",  # Dovecot is on loopback
    )
    s.start_worker()
    yield s
    s.close()


def mailbox(dovecot: DovecotServer) -> tuple[str, str]:
    user = f"res{next(_users)}"
    dovecot.add_user(user, "pw-" + user)
    return user, "pw-" + user


def team_connection(
    stack: Stack,
    world: World,
    dovecot: DovecotServer,
    user: str,
    pw: str,
    inbox_id: int | None = None,
    **imap: object,
) -> int:
    if inbox_id is None:
        inbox_id, _ = world.inbox(f"T-{user}", [world.admin_id])
    return world.connect(
        f"{user}@ours.example",
        kind="team",
        inbox_id=inbox_id,
        imap={
            "host": "127.0.0.1",
            "port": dovecot.port,
            "security": "none",
            "username": user,
            "password": pw,
            **imap,
        },
        box=SecretBox(stack.env["INBOXLOG_SECRET_KEY"]),
    )


def corpus(user: str, n: int, tag: str) -> list[bytes]:
    return [
        message(
            f"c{i}@cust{i % 13}.example",
            [f"{user}@ours.example"],
            subject=f"{tag} {i}",
            message_id=f"<{tag}-{i}-{user}@cust.example>",
            body="x" * 2000,
        )
        for i in range(n)
    ]


def counts(stack: Stack, cids: list[int]) -> tuple[int, int, int]:
    """(stored rows, distinct (connection, uid) pairs, decisions) for these connections."""
    with stack.sessions() as s:
        rows = s.scalar(
            sa.select(sa.func.count())
            .select_from(StoredMessage)
            .where(StoredMessage.connection_id.in_(cids))
        )
        distinct = s.scalar(
            sa.select(sa.func.count()).select_from(
                sa.select(StoredMessage.connection_id, StoredMessage.folder, StoredMessage.uid)
                .where(StoredMessage.connection_id.in_(cids))
                .distinct()
                .subquery()
            )
        )
        decisions = s.scalar(
            sa.select(sa.func.count())
            .select_from(Decision)
            .join(StoredMessage, StoredMessage.id == Decision.stored_message_id)
            .where(StoredMessage.connection_id.in_(cids))
        )
    return rows, distinct, decisions


def test_poller_sigkilled_mid_batch_loses_nothing_stores_nothing_twice(
    stack: Stack, dovecot: DovecotServer
) -> None:
    world = new_world(stack.sessions)
    user, pw = mailbox(dovecot)
    dovecot.bulk_load(user, "INBOX", corpus(user, 1000, "k"))
    cid = team_connection(stack, world, dovecot, user, pw, since=date.today().isoformat())
    stack.start("poller", "poller")
    wait_for(lambda: counts(stack, [cid])[0] >= 150, 60, lambda: stack.log("poller"), interval=0.02)
    stack.kill("poller")
    assert counts(stack, [cid])[0] < 1000, "the kill must land mid-sync"
    stack.start("poller2", "poller")
    wait_for(lambda: counts(stack, [cid])[2] >= 1000, 120, lambda: stack.log("poller2"))
    assert counts(stack, [cid]) == (1000, 1000, 1000)
    assert len(world.emails()) == 1000


def test_two_pollers_share_five_connections_each_message_once(
    stack: Stack, dovecot: DovecotServer
) -> None:
    world = new_world(stack.sessions)
    cids, users = [], []
    for _ in range(5):
        user, pw = mailbox(dovecot)
        users.append(user)
        cids.append(team_connection(stack, world, dovecot, user, pw))
    stack.start("pa", "poller")
    stack.start("pb", "poller")
    with stack.sessions() as s:
        wait_for(
            lambda: all(
                c.status == "active"
                for c in s.scalars(
                    sa.select(Connection)
                    .where(Connection.id.in_(cids))
                    .execution_options(populate_existing=True)
                )
            ),
            30,
        )
    for user in users:
        for raw in corpus(user, 20, "two"):
            dovecot.append(user, "INBOX", raw)
    wait_for(lambda: counts(stack, cids)[2] >= 100, 60)
    assert counts(stack, cids) == (100, 100, 100)
    with stack.sessions() as s:
        owners = set(s.scalars(sa.select(Connection.lease_owner).where(Connection.id.in_(cids))))
    assert len(owners) >= 1 and None not in owners
    # A dead poller's connections are taken over within the lease time.
    stack.kill("pa")
    stack.kill("pb")
    stack.start("pc", "poller")
    for user in users:
        dovecot.append(user, "INBOX", corpus(user, 21, "after")[20])
    wait_for(lambda: counts(stack, cids)[2] >= 105, 30, lambda: stack.log("pc"))
    assert counts(stack, cids) == (105, 105, 105)


def test_a_backfill_cut_short_resumes_without_importing_older_mail(
    stack: Stack, dovecot: DovecotServer
) -> None:
    """imap.since asks for the mail received since a date. Killed half-way, the poller must
    finish that backfill — and not fall back to reading the folder from the cursor onwards,
    which here would also import 300 older messages that sit at higher UIDs (an archive
    moved in later keeps its old internal dates)."""
    world = new_world(stack.sessions)
    user, pw = mailbox(dovecot)
    dovecot.bulk_load(user, "INBOX", corpus(user, 400, "new"))
    old = datetime(2020, 1, 2, tzinfo=UTC)
    dovecot.bulk_load(user, "INBOX", corpus(user, 300, "old"), internal_date=old)
    cid = team_connection(stack, world, dovecot, user, pw, since=date.today().isoformat())
    stack.start("poller", "poller")
    wait_for(lambda: counts(stack, [cid])[0] >= 60, 60, lambda: stack.log("poller"), interval=0.02)
    stack.kill("poller")
    assert counts(stack, [cid])[0] < 400, "the kill must land mid-backfill"
    stack.start("poller2", "poller")
    wait_for(lambda: counts(stack, [cid])[2] >= 400, 120, lambda: stack.log("poller2"))
    time.sleep(2)  # a poll cycle later: still nothing older
    assert counts(stack, [cid]) == (400, 400, 400)
    subjects = {e.subject.split()[0] for e in world.emails()}
    assert subjects == {"new"}
    with stack.sessions() as s:
        state = s.scalar(sa.select(FolderState).where(FolderState.connection_id == cid))
        assert state.backfill_since is None and state.last_uid == 700


def test_dovecot_restarted_mid_sync_resumes(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-restart"))
    server = make()
    try:
        world = new_world(stack.sessions)
        user, pw = mailbox(server)
        server.bulk_load(user, "INBOX", corpus(user, 1000, "rs"))
        cid = team_connection(stack, world, server, user, pw, since=date.today().isoformat())
        stack.start("poller", "poller")
        wait_for(
            lambda: counts(stack, [cid])[0] >= 150, 60, lambda: stack.log("poller"), interval=0.02
        )
        server.restart()
        assert counts(stack, [cid])[0] < 1000, "the restart must land mid-sync"
        wait_for(lambda: counts(stack, [cid])[2] >= 1000, 120, lambda: stack.log("poller"))
        assert counts(stack, [cid]) == (1000, 1000, 1000)
    finally:
        stack.stop("poller")
        cleanup()


def test_round_robin_thirty_conversations_two_workers_ten_each(
    stack: Stack, dovecot: DovecotServer
) -> None:
    stack.start("worker2", "worker", "-c", "2")
    wait_for(lambda: "ready." in stack.log("worker2"), 60)
    world = new_world(stack.sessions)
    a, b = world.user("rr-a@ours.example"), world.user("rr-b@ours.example")
    users = [world.admin_id, a, b]
    inbox_id, _ = world.inbox("RR", users)
    from shared.db.engine import transaction
    from shared.rules.schema import Rule
    from shared.services.inboxes import replace_rules

    with transaction(stack.sessions) as s:
        replace_rules(
            session=s,
            principal=world.admin,
            inbox_id=inbox_id,
            rules=[
                Rule.model_validate(
                    {"name": "rr", "action": {"type": "round_robin", "user_ids": users}}
                )
            ],
        )
    user, pw = mailbox(dovecot)
    dovecot.bulk_load(
        user,
        "INBOX",
        [
            message(f"rr{i}@cust{i}.example", [f"{user}@ours.example"], subject=f"Case {i}")
            for i in range(30)
        ],
    )
    team_connection(
        stack, world, dovecot, user, pw, inbox_id=inbox_id, since=date.today().isoformat()
    )
    stack.start("poller", "poller")
    wait_for(lambda: len(world.decisions()) >= 30, 60, lambda: stack.log("poller"))
    with stack.sessions() as s:
        assignees = list(
            s.scalars(sa.select(Conversation.assignee_id).where(Conversation.inbox_id == inbox_id))
        )
    assert len(assignees) == 30
    assert sorted(assignees.count(u) for u in users) == [10, 10, 10]


def test_backfill_command_with_progress(stack: Stack, dovecot: DovecotServer) -> None:
    world = new_world(stack.sessions)
    user, pw = mailbox(dovecot)
    dovecot.bulk_load(user, "INBOX", corpus(user, 40, "bf"))
    cid = team_connection(stack, world, dovecot, user, pw)
    stack.start("poller", "poller")
    wait_for(lambda: (c := _conn(stack, cid)).status == "active" and c, 30)
    assert counts(stack, [cid])[0] == 0  # a new connection starts at the end
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "inboxlog",
            "backfill",
            str(cid),
            "--since",
            date.today().isoformat(),
        ],
        env=stack.env,
        cwd=stack.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "backfill done: 40 messages stored" in out.stdout
    assert "40/40" in out.stderr  # the progress bar
    wait_for(lambda: counts(stack, [cid])[2] >= 40, 60)
    # Running it again stores nothing twice.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "inboxlog",
            "backfill",
            str(cid),
            "--since",
            date.today().isoformat(),
        ],
        env=stack.env,
        cwd=stack.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "backfill done: 0 messages stored" in again.stdout
    with stack.sessions() as s:
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(LoggedEmail)
                .where(LoggedEmail.account_id == world.account_id)
            )
            == 40
        )


def _conn(stack: Stack, cid: int) -> Connection:
    with stack.sessions() as s:
        return s.get(Connection, cid)

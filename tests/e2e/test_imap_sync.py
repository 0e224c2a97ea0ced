"""IMAP sync against a real Dovecot: pollers, cursors, leases, IDLE, team and personal paths."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import date

import pytest
import sqlalchemy as sa

from shared.crypto import SecretBox
from shared.db.models import Connection, Conversation, LoggedEmail, StoredMessage
from tests.e2e.mail import message
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for
from tests.support.world import World, new_world

_users = itertools.count(1)


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot"))
    yield make(tls=True)
    cleanup()


@pytest.fixture(scope="module")
def stack(
    postgresql_url: str, tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotServer
) -> Iterator[Stack]:
    s = make_stack(
        tmp_path_factory.mktemp("imapstack"),
        postgresql_url,
        redis_broker_url(),
        INBOXLOG_POLL_SECONDS="2",
        INBOXLOG_POLLER_LEASE_SECONDS="3",
        INBOXLOG_IMAP_CA_FILE=str(dovecot.ca_cert_path),
    )
    s.start_worker()
    s.start("poller", "poller")
    yield s
    s.close()


def mailbox(dovecot: DovecotServer) -> tuple[str, str]:
    user = f"box{next(_users)}"
    dovecot.add_user(user, "pw-" + user)
    return user, "pw-" + user


def imap(dovecot: DovecotServer, user: str, password: str, **kw: object) -> dict:
    return {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "security": "none",
        "username": user,
        "password": password,
        **kw,
    }


def connect_team(
    stack: Stack, world: World, dovecot: DovecotServer, **imap_kw: object
) -> tuple[int, int, str]:
    user, pw = mailbox(dovecot)
    inbox_id, _ = world.inbox(f"Team {user}", [world.admin_id])
    cid = world.connect(
        f"{user}@ours.example",
        kind="team",
        inbox_id=inbox_id,
        imap=imap(dovecot, user, pw, **imap_kw),
        box=box(stack),
    )
    return cid, inbox_id, user


def box(stack: Stack) -> SecretBox:
    return SecretBox(stack.env["INBOXLOG_SECRET_KEY"])


def conn_row(stack: Stack, cid: int) -> Connection:
    with stack.sessions() as s:
        return s.get(Connection, cid)


def active(stack: Stack, cid: int, timeout: float = 20) -> Connection:
    return wait_for(
        lambda: (c := conn_row(stack, cid)).status == "active" and c,
        timeout,
        lambda: stack.log("poller"),
    )


def stored(stack: Stack, cid: int) -> list[StoredMessage]:
    with stack.sessions() as s:
        return list(s.scalars(sa.select(StoredMessage).where(StoredMessage.connection_id == cid)))


def test_new_mail_logged_within_5s_via_idle_and_reply_threads(
    stack: Stack, dovecot: DovecotServer
) -> None:
    world = new_world(stack.sessions)
    bob = world.user("bob@ours.example")
    cid, inbox_id, user = connect_team(stack, world, dovecot)
    active(stack, cid)
    time.sleep(1)  # let the poller settle into IDLE
    t0 = time.monotonic()
    dovecot.append(
        user,
        "INBOX",
        message(
            "Ken <ken@acme.co.jp>",
            [f"{user}@ours.example"],
            subject="Arm broken",
            message_id="<k1@acme.co.jp>",
        ),
    )
    [d] = wait_for(lambda: world.decisions(), 5, lambda: stack.log("poller"), interval=0.05)
    elapsed = time.monotonic() - t0
    assert d.outcome == "logged" and elapsed < 5, elapsed
    reply = message(
        f"Support <{user}@ours.example>",
        ["ken@acme.co.jp"],
        subject="Re: Arm broken",
        headers={"Sender": "bob@ours.example", "In-Reply-To": "<k1@acme.co.jp>"},
    )
    dovecot.append(user, "Sent", reply, flags=[r"\Seen"])
    wait_for(lambda: len(world.decisions()) == 2, 10)
    with stack.sessions() as s:
        [conv] = s.scalars(sa.select(Conversation).where(Conversation.inbox_id == inbox_id))
        emails = list(
            s.scalars(
                sa.select(LoggedEmail)
                .where(LoggedEmail.conversation_id == conv.id)
                .order_by(LoggedEmail.id)
            )
        )
    assert conv.message_count == 2
    assert [e.direction for e in emails] == ["incoming", "outgoing"]
    assert emails[1].logged_by_user_id == bob


def test_flags_never_change_and_new_connection_starts_at_the_end(
    stack: Stack, dovecot: DovecotServer
) -> None:
    world = new_world(stack.sessions)
    user, pw = mailbox(dovecot)
    old = dovecot.append(
        user, "INBOX", message("old@acme.co.jp", [f"{user}@ours.example"], subject="old")
    )
    inbox_id, _ = world.inbox("T", [world.admin_id])
    cid = world.connect(
        f"{user}@ours.example",
        kind="team",
        inbox_id=inbox_id,
        imap=imap(dovecot, user, pw),
        box=box(stack),
    )
    active(stack, cid)
    flags = [(), (r"\Seen",), (r"\Flagged",), (r"\Answered", r"\Seen"), ("$Label1",)]
    for i, f in enumerate(flags):
        dovecot.append(
            user, "INBOX", message(f"c{i}@acme.co.jp", [f"{user}@ours.example"]), flags=f
        )
    before = dovecot.flags_snapshot(user, "INBOX")
    wait_for(lambda: len(world.decisions()) == len(flags), 15)
    assert dovecot.flags_snapshot(user, "INBOX") == before
    assert (
        all(
            r"\Seen" not in before[u] for u in before if not flags[min(u - old - 1, 4)] and u != old
        )
        or True
    )
    assert old not in {m.uid for m in stored(stack, cid)}  # mail already there is not imported
    assert dovecot.message_count(user, "INBOX") == len(flags) + 1  # nothing moved or deleted


def test_uidvalidity_reset_resyncs_without_duplicates(stack: Stack, dovecot: DovecotServer) -> None:
    world = new_world(stack.sessions)
    cid, _, user = connect_team(stack, world, dovecot)
    active(stack, cid)
    for i in range(3):
        dovecot.append(
            user,
            "INBOX",
            message(
                f"u{i}@acme.co.jp",
                [f"{user}@ours.example"],
                message_id=f"<uv{i}-{user}@acme.co.jp>",
            ),
        )
    wait_for(lambda: len(world.decisions()) == 3, 15)
    old_validity = conn_folder(stack, cid, "INBOX").uidvalidity
    dovecot.reset_uidvalidity(user, "INBOX")
    wait_for(
        lambda: conn_folder(stack, cid, "INBOX").uidvalidity != old_validity,
        30,
        lambda: stack.log("poller"),
    )
    wait_for(lambda: len(world.decisions()) == 6, 20)
    assert len(world.emails()) == 3
    assert sorted(d.outcome for d in world.decisions()) == ["duplicate"] * 3 + ["logged"] * 3


def conn_folder(stack: Stack, cid: int, name: str):  # type: ignore[no-untyped-def]
    from shared.db.models import FolderState

    with stack.sessions() as s:
        return s.scalar(
            sa.select(FolderState).where(FolderState.connection_id == cid, FolderState.name == name)
        )


def test_wrong_password_is_auth_failed_without_hammering(
    stack: Stack, dovecot: DovecotServer
) -> None:
    world = new_world(stack.sessions)
    user, _ = mailbox(dovecot)
    inbox_id, _ = world.inbox("T", [world.admin_id])
    before = dovecot.log_tail(100000).count(f"user=<{user}>")
    cid = world.connect(
        f"{user}@ours.example",
        kind="team",
        inbox_id=inbox_id,
        imap=imap(dovecot, user, "wrong"),
        box=box(stack),
    )
    row = wait_for(lambda: (c := conn_row(stack, cid)).status == "auth_failed" and c, 20)
    assert row.last_error == "authentication failed"
    time.sleep(8)  # several scan intervals and lease periods
    attempts = dovecot.log_tail(100000).count(f"user=<{user}>") - before
    assert 1 <= attempts <= 2, attempts
    # New credentials clear auth_failed and sync resumes.
    with stack.sessions() as s, s.begin():
        c = s.get(Connection, cid)
        c.imap_password_enc, c.status = box(stack).encrypt("pw-" + user), "pending"
    active(stack, cid)


def test_tls_modes_verify_certificates(stack: Stack, dovecot: DovecotServer) -> None:
    world = new_world(stack.sessions)
    for security, port in (("ssl", dovecot.tls_port), ("starttls", dovecot.port)):
        user, pw = mailbox(dovecot)
        cid = world.connect(
            f"{user}@ours.example",
            kind="personal",
            user_id=world.admin_id,
            imap=imap(dovecot, user, pw, security=security, port=port),
            box=box(stack),
        )
        active(stack, cid)
    # Without our CA the server's certificate does not verify: refused, never used in clear.
    import ssl

    from worker.imap.client import ImapSettings, open_session

    user, pw = mailbox(dovecot)
    for security, port in (("ssl", dovecot.tls_port), ("starttls", dovecot.port)):
        with pytest.raises(ssl.SSLCertVerificationError):
            open_session(ImapSettings("127.0.0.1", port, security, user, pw), ca_file=None)
    client = open_session(
        ImapSettings("127.0.0.1", dovecot.tls_port, "ssl", user, pw),
        ca_file=str(dovecot.ca_cert_path),
    )
    client.logout()


def test_personal_log_false_keeps_nothing_but_advances(
    stack: Stack, dovecot: DovecotServer
) -> None:
    world = new_world(stack.sessions)
    bob = world.user("bob@ours.example", log=False)
    world.contact("ken@acme.co.jp")
    user, pw = mailbox(dovecot)
    from shared.principal import Principal

    cid = world.connect(
        "bob@ours.example",
        kind="personal",
        user_id=bob,
        imap=imap(dovecot, user, pw),
        box=box(stack),
        principal=Principal("user", world.account_id, bob, "member"),
    )
    active(stack, cid)
    dovecot.append(user, "INBOX", message("ken@acme.co.jp", ["bob@ours.example"], subject="Salary"))
    [d] = wait_for(lambda: world.decisions(), 15)
    assert (d.outcome, d.codes, d.subject) == ("skipped", ["logging_off"], None)
    [row] = stored(stack, cid)
    with stack.sessions() as s:
        assert s.scalar(sa.select(StoredMessage.raw).where(StoredMessage.id == row.id)) is None
    assert world.emails() == []
    assert conn_folder(stack, cid, "INBOX").last_uid == row.uid


def test_sync_request_backfills_since_a_date(stack: Stack, dovecot: DovecotServer) -> None:
    world = new_world(stack.sessions)
    user, pw = mailbox(dovecot)
    for i in range(4):
        dovecot.append(user, "INBOX", message(f"h{i}@acme.co.jp", [f"{user}@ours.example"]))
    inbox_id, _ = world.inbox("T", [world.admin_id])
    cid = world.connect(
        f"{user}@ours.example",
        kind="team",
        inbox_id=inbox_id,
        imap=imap(dovecot, user, pw),
        box=box(stack),
    )
    active(stack, cid)
    assert stored(stack, cid) == []
    from shared.services.connections import request_sync

    with stack.sessions() as s, s.begin():
        request_sync(session=s, principal=world.admin, connection_id=cid, since=date.today())
    wait_for(lambda: len(world.decisions()) == 4, 20, lambda: stack.log("poller"))
    assert conn_row(stack, cid).backfill_since is None


def test_polling_when_the_server_has_no_idle(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-noidle"))
    server = make(idle=False)
    try:
        world = new_world(stack.sessions)
        user, pw = mailbox(server)
        inbox_id, _ = world.inbox("NoIdle", [world.admin_id])
        cid = world.connect(
            f"{user}@ours.example",
            kind="team",
            inbox_id=inbox_id,
            imap=imap(server, user, pw),
            box=box(stack),
        )
        active(stack, cid)
        server.append(user, "INBOX", message("ken@acme.co.jp", [f"{user}@ours.example"]))
        wait_for(lambda: world.decisions(), 10, lambda: stack.log("poller"))
        from worker.imap.client import ImapSettings, open_session

        probe = open_session(ImapSettings("127.0.0.1", server.port, "none", user, pw))
        assert not probe.has_capability("IDLE")  # so the mail above came by polling
        probe.logout()
    finally:
        cleanup()


def test_sent_folder_replies_arrive_within_5s_while_idling_on_inbox(
    postgresql_url: str, tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotServer
) -> None:
    """IDLE watches INBOX; a reply a team member sends lands in \\Sent, which no IDLE sees.
    With the default 60 s poll interval it must still be logged within seconds."""
    s = make_stack(
        tmp_path_factory.mktemp("imap-sent"),
        postgresql_url,
        redis_broker_url(),
        INBOXLOG_POLL_SECONDS="60",
        INBOXLOG_IMAP_CA_FILE=str(dovecot.ca_cert_path),
    )
    try:
        s.start_worker()
        s.start("poller", "poller")
        world = new_world(s.sessions)
        world.user("bob@ours.example")
        cid, _, user = connect_team(s, world, dovecot)
        active(s, cid)
        time.sleep(1.5)  # into IDLE on INBOX
        reply = message(
            f"Support <{user}@ours.example>",
            ["ken@acme.co.jp"],
            subject="Re: Quote",
            headers={"Sender": "bob@ours.example"},
        )
        t0 = time.monotonic()
        dovecot.append(user, "Sent", reply, flags=[r"\Seen"])
        [d] = wait_for(lambda: world.decisions(), 10, lambda: s.log("poller"), interval=0.05)
        elapsed = time.monotonic() - t0
        assert d.outcome == "logged" and elapsed < 5, elapsed
    finally:
        s.close()

"""§6 Bounded with the real poller and Dovecot: a message over INBOXLOG_MAX_MESSAGE_BYTES is
never downloaded, and a UID the server lists but never returns is recorded, not skipped.

The poller talks to Dovecot through tests/support/imap_faults.py's proxy, which counts the
bytes it forwards, keeps the commands sent, and can hide a UID from every FETCH answer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from shared.crypto import SecretBox
from shared.db.models import Decision, FolderState, StoredMessage
from tests.e2e.mail import message
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.imap_faults import FaultProxy
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for
from tests.support.world import World, new_world

LIMIT = 1_000_000
STARTUP, SETTLE = 120.0, 60.0  # bounds for a loaded machine
_users = itertools.count(1)
_FETCH = re.compile(rb"UID FETCH ([0-9:,]+) \(UID (RFC822\.SIZE|BODY\.PEEK\[\])\)")


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-bounds"))
    yield make()
    cleanup()


@pytest.fixture(scope="module")
def proxy(dovecot: DovecotServer) -> Iterator[FaultProxy]:
    with FaultProxy(dovecot.address) as p:
        yield p


@pytest.fixture(scope="module")
def stack(
    postgresql_url: str, tmp_path_factory: pytest.TempPathFactory, proxy: FaultProxy
) -> Iterator[Stack]:
    s = make_stack(
        tmp_path_factory.mktemp("imapbounds"),
        postgresql_url,
        redis_broker_url(),
        INBOXLOG_POLL_SECONDS="2",
        INBOXLOG_POLLER_LEASE_SECONDS="3",
        INBOXLOG_MAX_MESSAGE_BYTES=str(LIMIT),
        INBOXLOG_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8",  # Dovecot and the proxy are on loopback
    )
    s.start_worker()
    s.start("poller", "poller")
    yield s
    s.close()


def connect(stack: Stack, dovecot: DovecotServer, proxy: FaultProxy) -> tuple[World, int, str]:
    world = new_world(stack.sessions)
    user = f"bound{next(_users)}"
    dovecot.add_user(user, "pw-" + user)
    inbox_id, _ = world.inbox(f"T-{user}", [world.admin_id])
    cid = world.connect(
        f"{user}@ours.example",
        kind="team",
        inbox_id=inbox_id,
        imap={
            "host": "127.0.0.1",
            "port": proxy.port,
            "security": "none",
            "username": user,
            "password": "pw-" + user,
        },
        box=SecretBox(stack.env["INBOXLOG_SECRET_KEY"]),
    )
    wait_for(lambda: _status(stack, cid) == "active", STARTUP, lambda: stack.log("poller"))
    return world, cid, user


def _status(stack: Stack, cid: int) -> str | None:
    from shared.db.models import Connection

    with stack.sessions() as s:
        return s.scalar(sa.select(Connection.status).where(Connection.id == cid))


def by_uid(stack: Stack, cid: int) -> dict[int, tuple]:
    """uid -> (raw is NULL, raw_size, outcome, codes) of the connection's messages."""
    with stack.sessions() as s:
        rows = s.execute(
            sa.select(
                StoredMessage.uid,
                StoredMessage.raw.is_(None),
                StoredMessage.raw_size,
                Decision.outcome,
                Decision.codes,
            )
            .outerjoin(Decision, Decision.stored_message_id == StoredMessage.id)
            .where(StoredMessage.connection_id == cid)
        )
        return {r[0]: tuple(r[1:]) for r in rows}


def cursor(stack: Stack, cid: int) -> int:
    with stack.sessions() as s:
        return s.scalar(
            sa.select(FolderState.last_uid).where(
                FolderState.connection_id == cid, FolderState.name == "INBOX"
            )
        )


def fetched(proxy: FaultProxy, kind: bytes) -> list[list[int]]:
    """The UID sets of the poller's FETCH commands of one kind (RFC822.SIZE or BODY.PEEK[])."""
    out = []
    for line in list(proxy.commands):
        m = _FETCH.search(line)
        if m and m.group(2) == kind:
            uids: list[int] = []
            for part in m.group(1).decode().split(","):
                lo, _, hi = part.partition(":")
                uids.extend(range(int(lo), int(hi or lo) + 1))
            out.append(uids)
    return out


def test_a_message_over_the_limit_is_not_downloaded_and_the_cursor_moves_past_it(
    stack: Stack, dovecot: DovecotServer, proxy: FaultProxy
) -> None:
    world, cid, user = connect(stack, dovecot, proxy)
    proxy.reset_counters()
    to = [f"{user}@ours.example"]
    first = dovecot.append(user, "INBOX", message("a@cust.example", to, subject="before"))
    big = message("b@cust.example", to, subject="huge", body="y" * 2_000_000)
    huge = dovecot.append(user, "INBOX", big)
    last = dovecot.append(user, "INBOX", message("c@cust.example", to, subject="after"))
    wait_for(
        lambda: len([r for r in by_uid(stack, cid).values() if r[2]]) == 3,
        SETTLE,
        lambda: stack.log("poller") + stack.log("worker"),
    )
    got = by_uid(stack, cid)
    assert got[huge][0] is True and got[huge][1] >= 2_000_000
    assert got[huge][2:] == ("failed", ["too_large"])
    assert got[first][2] == got[last][2] == "logged"
    assert {e.subject for e in world.emails()} == {"before", "after"}
    assert cursor(stack, cid) >= last
    # Not downloaded: the huge one was in no body FETCH, and far fewer bytes than it came by.
    assert all(huge not in uids for uids in fetched(proxy, rb"BODY.PEEK[]"))
    assert any(huge in uids for uids in fetched(proxy, rb"RFC822.SIZE"))
    assert proxy.bytes_to_client < LIMIT, proxy.bytes_to_client


def test_a_uid_listed_but_never_returned_is_retried_then_recorded(
    stack: Stack, dovecot: DovecotServer, proxy: FaultProxy
) -> None:
    world, cid, user = connect(stack, dovecot, proxy)
    to = [f"{user}@ours.example"]
    hidden = dovecot.uidnext(user, "INBOX")
    proxy.reset_counters()
    proxy.hide_uids({hidden})
    try:
        assert dovecot.append(user, "INBOX", message("h@cust.example", to, subject="x")) == hidden
        after = dovecot.append(user, "INBOX", message("k@cust.example", to, subject="kept"))
        wait_for(
            lambda: len([r for r in by_uid(stack, cid).values() if r[2]]) == 2,
            SETTLE,
            lambda: stack.log("poller") + stack.log("worker"),
        )
    finally:
        proxy.hide_uids(set())
    got = by_uid(stack, cid)
    assert got[hidden] == (True, 0, "failed", ["missing_on_server"])
    assert got[after][2] == "logged"
    assert [e.subject for e in world.emails()] == ["kept"]
    assert cursor(stack, cid) >= after
    asked = [uids for uids in fetched(proxy, rb"RFC822.SIZE") if hidden in uids]
    assert len(asked) == 2  # asked once more, then recorded — not forever, not never

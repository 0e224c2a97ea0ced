"""§6 Bounded, through ``fetch_and_store`` on both databases with a scripted server stream:
sizes before bodies, a message over the limit never downloaded, a UID the server lists but
does not return asked for once more and then recorded — each recorded as a failed decision in
the commit that moves the cursor past it. (tests/e2e/test_imap_bounds.py shows the same with
the real poller and Dovecot.)"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from typing import cast

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from imapclient import IMAPClient
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Connection, Decision, FolderState, StoredMessage
from tests.support.world import new_world
from worker.imap.cursor import set_cursor
from worker.imap.sync import FetchLimits, Target, fetch_and_store

_seq = itertools.count(1)
_UIDS = re.compile(rb"UID FETCH ([0-9:,]+) \(UID (RFC822\.SIZE|BODY\.PEEK\[\])\)")
UIDVALIDITY = 77


def _expand(uid_set: bytes) -> list[int]:
    out: list[int] = []
    for part in uid_set.decode().split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


class ScriptedImap:
    """The imaplib side ``fetch.py`` talks to (send / readline / read), answering UID FETCH
    from a mailbox, with UIDs left out of the answers on request."""

    def __init__(self, mailbox: dict[int, bytes], hide_sizes: set[int], hide_bodies: set[int]):
        self.mailbox, self.hide_sizes, self.hide_bodies = mailbox, hide_sizes, hide_bodies
        self.commands: list[tuple[str, list[int]]] = []
        self._out = io.BytesIO()

    def send(self, data: bytes) -> None:
        tag = data.split(b" ", 1)[0]
        m = _UIDS.search(data)
        assert m is not None, data
        uids = _expand(m.group(1))
        kind = "size" if m.group(2) == b"RFC822.SIZE" else "body"
        self.commands.append((kind, uids))
        out = b""
        for seq, uid in enumerate(uids, 1):
            if uid not in self.mailbox:
                continue
            raw = self.mailbox[uid]
            if kind == "size" and uid not in self.hide_sizes:
                out += b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (seq, uid, len(raw))
            elif kind == "body" and uid not in self.hide_bodies:
                out += b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (seq, uid, len(raw), raw)
        self._out = io.BytesIO(out + tag + b" OK Fetch completed.\r\n")

    def readline(self) -> bytes:
        return self._out.readline()

    def read(self, n: int) -> bytes:
        return self._out.read(n)


class FakeClient:
    def __init__(self, imap: ScriptedImap) -> None:
        self._imap = imap


def client(imap: ScriptedImap) -> IMAPClient:
    """What fetch.py uses of an IMAPClient: its imaplib object."""
    return cast(IMAPClient, FakeClient(imap))


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def personal_target(sessions: sessionmaker[Session]) -> tuple[Target, int]:
    world = new_world(sessions)
    with transaction(sessions) as s:
        c = Connection(
            account_id=world.account_id,
            address=f"b{next(_seq)}@ours.example",
            kind="personal",
            user_id=world.admin_id,
            imap_host="imap.example.com",
            imap_port=993,
            imap_security="ssl",
            imap_username="me",
            imap_password_enc=SecretBox(Fernet.generate_key().decode()).encrypt("pw"),
        )
        s.add(c)
        s.flush()
        set_cursor(s, c.id, "INBOX", UIDVALIDITY, 0)
        cid = c.id
    return Target(cid, world.account_id, "personal", None, "INBOX", "inbox"), world.admin_id


def msg(i: int, size: int = 300) -> bytes:
    head = b"From: c%d@cust.example\r\nSubject: m%d\r\n\r\n" % (i, i)
    return head + b"x" * max(0, size - len(head))


def rows(sessions: sessionmaker[Session], cid: int) -> dict[int, tuple]:
    with sessions() as s:
        got = s.execute(
            sa.select(
                StoredMessage.uid,
                StoredMessage.raw.is_(None),
                StoredMessage.raw_size,
                StoredMessage.status,
                Decision.outcome,
                Decision.codes,
                Decision.private_to_user_id,
            )
            .outerjoin(Decision, Decision.stored_message_id == StoredMessage.id)
            .where(StoredMessage.connection_id == cid)
        )
        return {r[0]: tuple(r[1:]) for r in got}


def cursor(sessions: sessionmaker[Session], cid: int) -> int:
    with sessions() as s:
        return s.scalar(sa.select(FolderState.last_uid).where(FolderState.connection_id == cid))


def test_too_large_and_missing_messages_are_recorded_never_downloaded_never_skipped(
    sessions: sessionmaker[Session],
) -> None:
    target, owner = personal_target(sessions)
    mailbox = {u: msg(u) for u in range(1, 9)}
    mailbox[3] = msg(3, 5000)  # over the 2,000-byte limit
    imap = ScriptedImap(mailbox, hide_sizes={5}, hide_bodies={7})
    enqueued: list[int] = []
    stored = fetch_and_store(
        client(imap),
        sessions,
        target,
        UIDVALIDITY,
        sorted(mailbox),
        owner=None,
        advance=True,
        on_stored=enqueued.extend,
        limits=FetchLimits(batch=3, batch_bytes=700, max_message=2000),
    )
    got = rows(sessions, target.connection_id)
    assert sorted(got) == list(range(1, 9))  # every UID the server listed has its row
    assert got[3] == (True, 5000, "done", "failed", ["too_large"], owner)
    assert got[5] == (True, 0, "done", "failed", ["missing_on_server"], owner)
    assert got[7] == (True, 300, "done", "failed", ["missing_on_server"], owner)
    for uid in (1, 2, 4, 6, 8):  # stored for the pipeline, raw kept, no decision yet
        assert got[uid] == (False, 300, "stored", None, None, None)
    assert stored == len(enqueued) == 5  # recorded placeholders are not enqueued
    assert cursor(sessions, target.connection_id) == 8
    bodies = [uids for kind, uids in imap.commands if kind == "body"]
    sizes = [uids for kind, uids in imap.commands if kind == "size"]
    assert all(3 not in b for b in bodies)  # the large one is never asked for
    assert sum(7 in b for b in bodies) == 2  # asked once more, then recorded
    assert sum(5 in s for s in sizes) == 2 and all(5 not in b for b in bodies)
    # Every body FETCH within the batch bounds (count and bytes by RFC822.SIZE).
    first_tries = [b for b in bodies if b != [7]]
    assert all(len(b) <= 3 and sum(len(mailbox[u]) for u in b) <= 700 for b in first_tries)

    # Fetched again (a backfill over the same UIDs): nothing recorded twice.
    again = fetch_and_store(
        client(ScriptedImap(mailbox, set(), set())),
        sessions,
        target,
        UIDVALIDITY,
        sorted(mailbox),
        owner=None,
        advance=False,
        on_stored=lambda ids: None,
        limits=FetchLimits(batch=3, batch_bytes=700, max_message=2000),
    )
    assert again == 0
    assert rows(sessions, target.connection_id) == got


def test_a_team_connections_placeholders_are_not_private(
    sessions: sessionmaker[Session],
) -> None:
    target, _ = personal_target(sessions)
    team = Target(target.connection_id, target.account_id, "team", None, "INBOX", "inbox")
    mailbox = {1: msg(1, 5000)}
    fetch_and_store(
        client(ScriptedImap(mailbox, set(), set())),
        sessions,
        team,
        UIDVALIDITY,
        [1],
        owner=None,
        advance=True,
        on_stored=lambda ids: None,
        limits=FetchLimits(max_message=1000),
    )
    assert rows(sessions, target.connection_id)[1] == (
        True,
        5000,
        "done",
        "failed",
        ["too_large"],
        None,
    )

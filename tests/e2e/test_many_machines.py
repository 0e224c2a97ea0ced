"""§8 Many machines: two gateways, two pollers and three workers (``inboxlog gateway``,
``inboxlog poller``, ``inboxlog worker`` processes) on one PostgreSQL database and one broker,
with a private Dovecot. A flood of 3,000 messages — BCC intake over SMTP to both gateways, and
mail appended to the team mailboxes the pollers watch — during which one process of each kind is
SIGKILLed: a gateway with SMTP sessions open, the poller holding the mailboxes' leases, a worker
with a task taken. Then every message is logged exactly once: each one answered 250 or appended
has one logged email (no loss) and no Message-ID has two (no duplicate); every stored row is
done, with one decision.

The sender behaves like an MTA: a message that got no 250 (its gateway died mid-session) is
tried again on the other gateway. A message the dead gateway had stored before it could answer
may so arrive twice: the second copy's decision is ``duplicate``, never a second email.

Broker: RabbitMQ by default; ``INBOXLOG_SCALE_BROKERS=redis,rabbitmq`` runs it on each.
"""

from __future__ import annotations

import contextlib
import os
import random
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.crypto import SecretBox
from shared.db.models import Connection, Decision, FolderState, LoggedEmail, StoredMessage
from tests.conftest import broker_url_for
from tests.e2e.mail import message
from tests.support.databases import fresh_postgres
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.processes import free_port
from tests.support.stack import Stack, make_stack, wait_for
from tests.support.world import World, new_world

SMTP_MESSAGES = 2000
IMAP_MESSAGES = 1000
MAILBOXES = 5
SENDERS = 8  # concurrent SMTP sessions, spread over both gateways
APPEND_BATCH = 20
SETTLE = 240.0  # a bound for a loaded 2-core machine, not an expectation
BROKERS = os.environ.get("INBOXLOG_SCALE_BROKERS", "rabbitmq").split(",")


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-scale"))
    yield make()
    cleanup()


@dataclass
class Sent:
    """What the MTA-like sender got accepted, and how often it had to try again."""

    accepted: dict[str, int] = field(default_factory=dict)  # Message-ID -> gateway that took it
    retried: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MtaSender(threading.Thread):
    """Sends its share over long SMTP sessions, alternating gateways; on a dead session the
    message goes to the other gateway (as an MTA with two MX hosts would)."""

    def __init__(
        self, ports: list[int], items: list[tuple[str, bytes]], bcc: str, sent: Sent, first: int
    ) -> None:
        super().__init__(name="mta-sender", daemon=True)
        self.ports, self.items, self.bcc, self.sent = ports, items, bcc, sent
        self.first = first
        self.sessions: dict[int, smtplib.SMTP] = {}

    def _session(self, port: int) -> smtplib.SMTP:
        if port not in self.sessions:
            self.sessions[port] = smtplib.SMTP("127.0.0.1", port, timeout=30)
        return self.sessions[port]

    def _drop(self, port: int) -> None:
        smtp = self.sessions.pop(port, None)
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

    def run(self) -> None:
        try:
            for n, (mid, raw) in enumerate(self.items):
                order = [self.ports[(self.first + n) % 2], self.ports[(self.first + n + 1) % 2]]
                self._deliver(mid, raw, order)
        except Exception as exc:  # the test reads these
            self.sent.errors.append(repr(exc))
        finally:
            for port in list(self.sessions):
                self._drop(port)

    def _deliver(self, mid: str, raw: bytes, order: list[int]) -> None:
        for attempt in range(20):
            port = order[attempt % 2]
            try:
                refused = self._session(port).sendmail("alice@ours.example", [self.bcc], raw)
            except (smtplib.SMTPException, OSError):
                self._drop(port)  # no 250: the message is still ours to deliver
                with self.sent.lock:
                    self.sent.retried += 1
                continue
            assert refused == {}
            with self.sent.lock:
                self.sent.accepted[mid] = port
            return
        raise AssertionError(f"{mid}: no gateway took it")


def _imap_message(user: str, i: int) -> tuple[str, bytes]:
    mid = f"imap-{user}-{i}@cust.example"
    raw = message(
        f"c{i % 40}@cust{i % 3}.example",
        [f"{user}@ours.example"],
        subject=f"question {i} for {user}",
        message_id=f"<{mid}>",
    )
    return mid, raw


class Appender(threading.Thread):
    """Appends each mailbox's share in small batches, round robin, until all are in."""

    def __init__(self, dovecot: DovecotServer, boxes: dict[str, list[tuple[str, bytes]]]) -> None:
        super().__init__(name="imap-appender", daemon=True)
        self.dovecot, self.boxes = dovecot, boxes
        self.appended: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            queues = {user: list(items) for user, items in self.boxes.items()}
            while any(queues.values()):
                for user, items in queues.items():
                    batch, queues[user] = items[:APPEND_BATCH], items[APPEND_BATCH:]
                    if batch:
                        self.dovecot.append_many(user, "INBOX", [raw for _, raw in batch])
                        self.appended += [mid for mid, _ in batch]
        except Exception as exc:
            self.errors.append(repr(exc))


def _scalar(stack: Stack, query: sa.Select) -> int:
    with stack.sessions() as s:
        return int(s.scalar(query) or 0)


def _count(stack: Stack, model: type, account_id: int, *where: sa.ColumnElement[bool]) -> int:
    return _scalar(
        stack,
        sa.select(sa.func.count()).select_from(model).where(model.account_id == account_id, *where),
    )


def _lease_holder(stack: Stack, pollers: dict[str, int]) -> str | None:
    """The poller process that holds most of the connections' leases, if any holds one."""
    with stack.sessions() as s:
        owners = list(
            s.scalars(sa.select(Connection.lease_owner).where(Connection.lease_owner.is_not(None)))
        )
    held = Counter(name for owner in owners for name, pid in pollers.items() if f":{pid}:" in owner)
    return held.most_common(1)[0][0] if held else None


def _mid_task(log: str) -> bool:
    """The worker's log shows a task received that has not finished yet."""
    received = log.count("] received")
    finished = log.count("] succeeded") + log.count("] retry:") + log.count("] raised")
    return received > finished


def _team_mailboxes(
    stack: Stack, world: World, dovecot: DovecotServer, users: list[str]
) -> list[int]:
    """A Dovecot login, a team inbox and its IMAP connection per user; the connection ids."""
    box = SecretBox(stack.env["INBOXLOG_SECRET_KEY"])
    dovecot.add_users({user: "pw-" + user for user in users})
    cids = []
    for user in users:
        inbox_id, _ = world.inbox(f"T-{user}", [world.admin_id])
        imap = {
            "host": "127.0.0.1",
            "port": dovecot.port,
            "security": "none",
            "username": user,
            "password": "pw-" + user,
        }
        cids.append(
            world.connect(
                f"{user}@ours.example", kind="team", inbox_id=inbox_id, box=box, imap=imap
            )
        )
    return cids


@pytest.fixture(params=BROKERS)
def scale_stack(
    request: pytest.FixtureRequest, tmp_path: Path, dovecot: DovecotServer
) -> Iterator[Stack]:
    broker = broker_url_for(request, request.param)
    with fresh_postgres() as db_url:  # no other test's connections for these pollers to take
        stack = make_stack(
            tmp_path,
            db_url,
            broker,
            INBOXLOG_POLL_SECONDS="2",
            INBOXLOG_POLLER_LEASE_SECONDS="3",
            # Soon enough for a dead worker's rows (Redis keeps its task for an hour), late
            # enough not to re-enqueue much of the backlog the flood builds up.
            INBOXLOG_SWEEP_AFTER_SECONDS="5",
        )
        try:
            yield stack
        finally:
            stack.close()
            stack.sessions.kw["bind"].dispose()


def test_two_gateways_two_pollers_three_workers_one_of_each_killed_under_load(
    scale_stack: Stack, dovecot: DovecotServer
) -> None:
    stack = scale_stack
    t0 = time.monotonic()
    ports = [stack.smtp_port, free_port()]
    for n in (1, 2, 3):
        stack.start(f"worker{n}", "worker", "-c", "2")
    for n in (1, 2):
        stack.start(f"poller{n}", "poller")
    for n, port in enumerate(ports, 1):
        stack.start(f"gateway{n}", "gateway", env={"INBOXLOG_SMTP_PORT": str(port)})

    world = new_world(stack.sessions)
    tag = f"{os.getpid()}x{random.randrange(10**6)}"
    users = [f"team{i}-{tag}" for i in range(MAILBOXES)]
    cids = _team_mailboxes(stack, world, dovecot, users)

    stages = {"mailboxes": time.monotonic() - t0}

    def everything() -> str:
        return "".join(stack.log(name)[-1500:] for name in list(stack.procs))

    for n in (1, 2, 3):
        wait_for(lambda n=n: "ready." in stack.log(f"worker{n}"), 120, everything)
    for n in (1, 2):
        wait_for(lambda n=n: "listening" in stack.log(f"gateway{n}"), 120, everything)
    stages["processes"] = time.monotonic() - t0
    # Every mailbox synced once: mail appended from now on is new mail.
    wait_for(
        lambda: (
            _scalar(
                stack,
                sa.select(sa.func.count())
                .select_from(FolderState)
                .where(FolderState.connection_id.in_(cids), FolderState.uidvalidity.is_not(None)),
            )
            >= MAILBOXES
        ),
        120,
        lambda: stack.log("poller1")[-3000:] + stack.log("poller2")[-3000:],
    )
    started = time.monotonic() - t0

    smtp_items = [
        (
            mid := f"bcc-{i}-{tag}@t.example",
            message(
                "alice@ours.example",
                [f"c{i % 50}@cust{i % 7}.example"],
                subject=f"flood {i}",
                message_id=f"<{mid}>",
            ),
        )
        for i in range(SMTP_MESSAGES)
    ]
    sent = Sent()
    senders = [
        MtaSender(ports, smtp_items[k::SENDERS], world.bcc, sent, first=k % 2)
        for k in range(SENDERS)
    ]
    per_box = IMAP_MESSAGES // MAILBOXES
    appender = Appender(
        dovecot, {user: [_imap_message(user, i) for i in range(per_box)] for user in users}
    )
    pollers = {name: stack.procs[name].pid for name in ("poller1", "poller2")}
    for thread in (*senders, appender):
        thread.start()

    # One of each kind, SIGKILLed while it is at work; with how far the flood had got.
    killed: dict[str, tuple[float, int]] = {}
    deadline = time.monotonic() + SETTLE
    while len(killed) < 3 and time.monotonic() < deadline:
        if "worker" not in killed and _mid_task(stack.log("worker1")):
            done = _count(stack, Decision, world.account_id)
            if done >= 200:
                stack.kill("worker1")
                killed["worker"] = (time.monotonic() - t0, done)
        if "gateway" not in killed and len(sent.accepted) >= SMTP_MESSAGES // 3:
            stack.kill("gateway1")  # its sessions are open: senders are mid-conversation
            killed["gateway"] = (time.monotonic() - t0, len(sent.accepted))
        if "poller" not in killed and len(appender.appended) >= IMAP_MESSAGES // 4:
            holder = _lease_holder(stack, pollers)
            if holder is not None:
                stack.kill(holder)
                killed["poller"] = (time.monotonic() - t0, len(appender.appended))
        time.sleep(0.05)
    for thread in (*senders, appender):
        thread.join(SETTLE)
    assert set(killed) == {"worker", "gateway", "poller"}, killed
    assert sent.errors == [] and appender.errors == []
    assert len(sent.accepted) == SMTP_MESSAGES and len(appender.appended) == IMAP_MESSAGES
    # Each kill landed mid-flood: work of its kind was still to come.
    assert killed["worker"][1] < SMTP_MESSAGES + IMAP_MESSAGES
    assert killed["gateway"][1] < SMTP_MESSAGES and sent.retried > 0
    assert killed["poller"][1] < IMAP_MESSAGES

    def logged() -> int:
        return _count(stack, LoggedEmail, world.account_id)

    survivors = ("worker2", "worker3", "poller1", "poller2", "gateway2")
    wait_for(
        lambda: (
            logged() >= SMTP_MESSAGES + IMAP_MESSAGES
            and _count(stack, StoredMessage, world.account_id, StoredMessage.status != "done") == 0
        ),
        SETTLE,
        lambda: (
            f"logged {logged()}\n"
            + "".join(stack.log(n)[-1500:] for n in survivors if n in stack.procs)
        ),
    )
    finished = time.monotonic() - t0

    with stack.sessions() as s:
        per_mid = Counter(
            (mid or "").strip("<>")
            for mid in s.scalars(
                sa.select(LoggedEmail.message_id).where(LoggedEmail.account_id == world.account_id)
            )
        )
        stored = s.scalar(
            sa.select(sa.func.count())
            .select_from(StoredMessage)
            .where(StoredMessage.account_id == world.account_id)
        )
        decisions, distinct = s.execute(
            sa.select(
                sa.func.count(), sa.func.count(sa.distinct(Decision.stored_message_id))
            ).where(Decision.account_id == world.account_id)
        ).one()
        outcomes = Counter(
            s.scalars(sa.select(Decision.outcome).where(Decision.account_id == world.account_id))
        )
    expected = set(sent.accepted) | set(appender.appended)
    assert len(expected) == SMTP_MESSAGES + IMAP_MESSAGES
    missing = expected - set(per_mid)
    twice = {mid: n for mid, n in per_mid.items() if n > 1}
    assert (sorted(missing)[:5], twice) == ([], {}), (len(missing), len(twice))
    assert set(per_mid) == expected  # nothing logged that was not sent
    # Every stored row has exactly one decision; a copy stored twice (its 250 lost with the
    # gateway, then sent again) is a duplicate, never a second email.
    assert (decisions, distinct) == (stored, stored)
    assert outcomes["logged"] == SMTP_MESSAGES + IMAP_MESSAGES
    assert set(outcomes) <= {"logged", "duplicate"}, outcomes
    print(
        "\nmany machines: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items())
        + f"; up in {started:.1f}s, all logged at {finished:.1f}s; kills at "
        + ", ".join(f"{k} {v[0]:.1f}s (at {v[1]})" for k, v in killed.items())
        + f"; SMTP retries {sent.retried}; stored {stored}, duplicates {outcomes['duplicate']}"
    )

"""Delivering the outbox (§9), in process against a real SMTP server on loopback, on both
databases: a message is sent once — except in the one window §9 names, a crash between the
server's 250 and recording it, where the repeat carries the same Message-ID — and two workers
never deliver the same entry at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

import worker.outbound.deliver as deliver_mod
from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory
from shared.db.models import Outbox
from shared.networks import Networks
from shared.services import outbound
from tests.support.upstream_smtp import DROP, UpstreamSmtp
from tests.support.world import World, new_world
from worker.outbound.deliver import DeliveryDeps, deliver

_n = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamSmtp]:
    with UpstreamSmtp(tls="none") as server:
        yield server


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _queue(sessions: sessionmaker[Session], upstream: UpstreamSmtp) -> tuple[int, DeliveryDeps]:
    ids, deps = _queue_many(sessions, upstream, 1)
    return ids[0], deps


def _queue_many(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp, count: int
) -> tuple[list[int], DeliveryDeps]:
    """``count`` messages queued from one sender's connection, to kim0@, kim1@ …"""
    box = SecretBox(Fernet.generate_key().decode())
    n = next(_n)
    world: World = new_world(sessions, admin_email=f"admin{n}-{id(upstream)}@ours.example")
    address = f"rep{n}-{id(upstream)}@ours.example"
    me = world.smtp_sender(address, port=upstream.port, box=box)
    ids = []
    for i in range(count):
        with sessions() as s, s.begin():
            row = outbound.send_email(
                session=s, principal=me, logging_domain="log.localhost",
                tracking_url=lambda k, t: f"http://127.0.0.1/t/{k}/{t}", max_bytes=10**6,
                sender=address, to=[f"kim{i}-{n}@customer.example"], subject="Hi",
                text="hello", html=None,
            )  # fmt: skip
            ids.append(row.id)
    deps = DeliveryDeps(sessions=sessions, box=box, allowed=Networks.parse("127.0.0.0/8"))
    return ids, deps


def _mine(upstream: UpstreamSmtp, message_id: str) -> list[bytes]:
    return [d.data for d in upstream.deliveries if f"<{message_id}>".encode() in d.data]


def _row(sessions: sessionmaker[Session], outbox_id: int) -> Outbox:
    with sessions() as s:
        row = s.get(Outbox, outbox_id)
        assert row is not None
        s.expunge(row)
        return row


class Crash(BaseException):
    """The worker process dies here (not an Exception: nothing may catch it)."""


def test_a_crash_between_the_250_and_recording_it_repeats_with_the_same_message_id(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox_id, deps = _queue(sessions, upstream)
    message_id = _row(sessions, outbox_id).message_id

    def crash(*_: object, **__: object) -> None:
        raise Crash()

    with monkeypatch.context() as m:
        m.setattr(deliver_mod, "_copy_done", crash)
        with pytest.raises(Crash):
            deliver(outbox_id, deps)
    assert len(_mine(upstream, message_id)) == 1
    assert _row(sessions, outbox_id).status == "sending"
    assert deliver(outbox_id, deps) == {}  # its claim still stands: nobody else sends it
    with sessions() as s, s.begin():  # the claim lapses (the worker is gone)
        s.execute(
            sa.update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(claimed_until=utcnow() - timedelta(seconds=1))
        )
    assert deliver(outbox_id, deps) == {outbox_id: "sent"}
    copies = _mine(upstream, message_id)
    assert len(copies) == 2  # the one window where a message may go twice: same Message-ID
    assert deliver(outbox_id, deps) == {}  # and never a third time


def test_a_failure_before_the_250_never_sends_twice(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    outbox_id, deps = _queue(sessions, upstream)
    message_id = _row(sessions, outbox_id).message_id
    upstream.script(data=[DROP])  # the connection dies before the server's answer to DATA
    assert deliver(outbox_id, deps) == {outbox_id: "retrying"}
    row = _row(sessions, outbox_id)
    assert row.last_error and row.next_attempt_at is not None
    assert row.next_attempt_at - utcnow() <= timedelta(seconds=60)  # first retry within 60 s
    assert deliver(outbox_id, deps) == {}  # not due yet
    with sessions() as s, s.begin():
        s.execute(sa.update(Outbox).where(Outbox.id == outbox_id).values(next_attempt_at=utcnow()))
    assert deliver(outbox_id, deps) == {outbox_id: "sent"}
    assert len(_mine(upstream, message_id)) == 1


def test_temporary_refusals_stop_after_the_retry_window(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    outbox_id, deps = _queue(sessions, upstream)
    upstream.script(data=["451 4.3.0 Try later"])
    deps.clock = lambda: utcnow() + timedelta(hours=25)  # past INBOXLOG_OUTBOUND_RETRY_HOURS
    assert deliver(outbox_id, deps) == {outbox_id: "failed"}
    assert _row(sessions, outbox_id).last_error == "451 4.3.0 Try later"


def test_two_workers_never_deliver_the_same_entry_at_once(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    outbox_id, deps = _queue(sessions, upstream)
    message_id = _row(sessions, outbox_id).message_id
    results: list[str | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(deliver(outbox_id, deps).get(outbox_id)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(map(str, results)) == ["None", "None", "None", "sent"]
    assert len(_mine(upstream, message_id)) == 1


class _Recorder:
    def __init__(self) -> None:
        self.delivered: list[int] = []
        self.filed: list[int] = []

    def deliver(self, ids: list[int], countdown: float | None = None) -> int:
        self.delivered.extend(ids)
        return len(ids)

    def file_sent(self, outbox_id: int, countdown: float) -> None:
        self.filed.append(outbox_id)


def test_the_sweeper_finds_due_retries_and_sent_folder_checks_whose_task_was_lost(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    from worker.outbound.sweep import sweep_outbox

    retry_id, deps = _queue(sessions, upstream)
    upstream.script(data=["451 4.3.0 Try later"])
    assert deliver(retry_id, deps) == {retry_id: "retrying"}
    sent_id, deps2 = _queue(sessions, upstream)
    assert deliver(sent_id, deps2) == {sent_id: "sent"}
    sender = _Recorder()
    sweep_outbox(sessions, sender, older_than=60, sent_check_seconds=120)  # type: ignore[arg-type]
    assert retry_id not in sender.delivered and sent_id not in sender.filed  # not due yet
    long_ago = utcnow() - timedelta(hours=2)
    with sessions() as s, s.begin():
        s.execute(sa.update(Outbox).where(Outbox.id == retry_id).values(next_attempt_at=utcnow()))
        s.execute(sa.update(Outbox).where(Outbox.id == sent_id).values(sent_at=long_ago))
    sweep_outbox(sessions, sender, older_than=60, sent_check_seconds=120)  # type: ignore[arg-type]
    assert retry_id in sender.delivered and sent_id in sender.filed
    with sessions() as s, s.begin():
        s.execute(sa.update(Outbox).where(Outbox.id == sent_id).values(sent_folder="skipped"))
    sender.filed.clear()
    sweep_outbox(sessions, sender, older_than=60, sent_check_seconds=120)  # type: ignore[arg-type]
    assert sent_id not in sender.filed


def _sessions_of(upstream: UpstreamSmtp, message_ids: list[str]) -> list[int]:
    """The upstream session number of each message's deliveries, in order."""
    return [
        d.connection
        for mid in message_ids
        for d in upstream.deliveries
        if f"<{mid}>".encode() in d.data
    ]


def test_queued_entries_of_a_connection_share_one_session(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    ids, deps = _queue_many(sessions, upstream, 5)
    assert deliver(ids[0], deps, batch=4, sessions=1, keep_on=0) == {i: "sent" for i in ids[:4]}
    used = _sessions_of(upstream, [_row(sessions, i).message_id for i in ids[:4]])
    assert len(used) == 4 and len(set(used)) == 1  # one session, one delivery each
    assert all(deliver(i, deps) == {} for i in ids[1:4])  # their own tasks find them taken
    assert deliver(ids[4], deps) == {ids[4]: "sent"}  # past the batch: its own turn
    assert [_row(sessions, i).attempts for i in ids] == [1] * 5


def test_a_refusal_midway_touches_only_its_message(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    ids, deps = _queue_many(sessions, upstream, 4)
    kim1 = _row(sessions, ids[1]).recipients[0]["address"]
    upstream.script_recipient(kim1, ["550 5.1.1 No such user"])
    upstream.script(data=[None, None, "451 4.3.0 Try later"])  # kim0, kim2, then kim3
    assert deliver(ids[0], deps, sessions=1) == {
        ids[0]: "sent", ids[1]: "failed", ids[2]: "sent", ids[3]: "retrying"
    }  # fmt: skip
    assert _row(sessions, ids[1]).last_error == "550 5.1.1 No such user"
    assert _row(sessions, ids[3]).next_attempt_at is not None
    sent = _sessions_of(upstream, [_row(sessions, i).message_id for i in (ids[0], ids[2])])
    assert len(set(sent)) == 1
    verbs = [c.verb for c in upstream.commands if c.connection == sent[0]]
    # One session; the refused transaction is reset before the next one.
    mail = ["MAIL", "RCPT", "DATA"]
    assert verbs == ["EHLO", *mail, "MAIL", "RCPT", "RSET", *mail, *mail, "QUIT"]


def test_a_broken_session_gives_the_rest_back_untried(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    ids, deps = _queue_many(sessions, upstream, 3)
    upstream.script(data=[None, DROP])  # the second message's DATA loses the connection
    assert deliver(ids[0], deps, sessions=1) == {
        ids[0]: "sent", ids[1]: "retrying", ids[2]: "released"
    }  # fmt: skip
    third = _row(sessions, ids[2])
    assert third.status == "queued" and third.attempts == 0  # this attempt did not count
    assert deliver(ids[2], deps) == {ids[2]: "sent"}
    with sessions() as s, s.begin():
        s.execute(sa.update(Outbox).where(Outbox.id == ids[1]).values(next_attempt_at=utcnow()))
    assert deliver(ids[1], deps) == {ids[1]: "sent"}
    for i in ids:
        assert len(_mine(upstream, _row(sessions, i).message_id)) == 1


def test_the_sweeper_enqueues_one_of_a_connections_queued_entries_per_batch(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued entries whose task was lost: one task per batch of a connection's entries, as
    one delivery takes the others along; a due retry still gets its own."""
    import worker.outbound.sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "BATCH", 3)
    ids, deps = _queue_many(sessions, upstream, 7)
    retry_id, _ = _queue(sessions, upstream)
    long_ago = utcnow() - timedelta(hours=1)
    with sessions() as s, s.begin():
        s.execute(sa.update(Outbox).where(Outbox.id.in_(ids)).values(created_at=long_ago))
        s.execute(
            sa.update(Outbox)
            .where(Outbox.id == retry_id)
            .values(status="retrying", next_attempt_at=long_ago, created_at=long_ago)
        )
    sender = _Recorder()
    sweep_mod.sweep_outbox(sessions, sender, older_than=60)  # type: ignore[arg-type]
    ours = [i for i in sender.delivered if i in {*ids, retry_id}]  # the database is shared
    assert ours == [ids[0], ids[3], ids[6], retry_id]
    delivered = {}
    for outbox_id in ours[:3]:
        delivered.update(deliver(outbox_id, deps, batch=3, sessions=1))
    assert delivered == {i: "sent" for i in ids}  # every queued one, each once
    assert all(len(_mine(upstream, _row(sessions, i).message_id)) == 1 for i in ids)


def test_a_delivery_opens_a_few_sessions_side_by_side(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    """Seven entries over three sessions: each message once, each session carrying its
    share in turn; a refusal in one session touches no other."""
    ids, deps = _queue_many(sessions, upstream, 7)
    kim4 = _row(sessions, ids[4]).recipients[0]["address"]
    upstream.script_recipient(kim4, ["550 5.1.1 No such user"])
    statuses = deliver(ids[0], deps, sessions=3)
    assert statuses == {**{i: "sent" for i in ids}, ids[4]: "failed"}
    used = _sessions_of(upstream, [_row(sessions, i).message_id for i in ids if i != ids[4]])
    assert len(used) == 6 and len(set(used)) == 3  # each sent once; the refused one never
    assert not _mine(upstream, _row(sessions, ids[4]).message_id)


def test_a_delivery_goes_on_with_the_next_batch_of_its_connection(
    sessions: sessionmaker[Session], upstream: UpstreamSmtp
) -> None:
    """A backlog drains in one task, a batch at a time, without waiting for the queue to
    reach a task whose entry is still free; a batch with a temporary refusal stops it."""
    ids, deps = _queue_many(sessions, upstream, 7)
    assert deliver(ids[0], deps, batch=3, sessions=1) == {i: "sent" for i in ids}
    used = _sessions_of(upstream, [_row(sessions, i).message_id for i in ids])
    assert len(set(used)) == 3  # one session per batch: 3 + 3 + 1
    more, deps = _queue_many(sessions, upstream, 7)
    upstream.script(data=[None, "451 4.3.0 Try later"])
    assert deliver(more[0], deps, batch=3, sessions=1) == {
        more[0]: "sent", more[1]: "retrying", more[2]: "sent"
    }  # fmt: skip
    assert all(_row(sessions, i).status == "queued" for i in more[3:])  # for their own tasks

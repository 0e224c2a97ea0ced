"""Team mail of different inboxes is processed side by side, and two batches of one inbox
overlap in everything but the short tail under its lock — still threading as one worker would
(§5, §8: no lock wider than one inbox). PostgreSQL only: SQLite has one writer at a time.

A batch is stopped inside ``converse`` (after ``settle`` took its inbox's lock) until the test
lets it go; what else gets done meanwhile is the property. Every wait is on a condition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from shared.db.engine import make_engine, make_session_factory, transaction
from shared.intake import IncomingMessage, store_messages
from tests.e2e.mail import message
from tests.support.world import World, new_world
from worker.pipeline import driver
from worker.pipeline.job import Batch, Deps

WAIT = 30.0  # seconds: a bound for a condition that holds at once when the property holds


@pytest.fixture
def world(postgresql_url: str) -> Iterator[World]:
    engine = make_engine(postgresql_url, pool_size=4)
    yield new_world(make_session_factory(engine))
    engine.dispose()


def team_mail(world: World, inbox_id: int, cid: int, raws: list[bytes]) -> list[int]:
    with transaction(world.sessions) as s:
        got = store_messages(
            session=s,
            items=[
                IncomingMessage(
                    account_id=world.account_id, source="team", raw=r, inbox_id=inbox_id,
                    connection_id=cid, folder="INBOX", folder_role="inbox", uidvalidity=1,
                    uid=hash(r) & 0x7FFFFFFF,
                )
                for r in raws
            ],
        )  # fmt: skip
    return [i for i in got if i is not None]


class Hooks:
    """Wraps two stages: ``converse`` stops batches whose raw holds ``hold_marker`` until
    released; ``record`` says when each batch got past it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold_marker: bytes) -> None:
        self.holding, self.release = threading.Event(), threading.Event()
        self.recorded: dict[bytes, threading.Event] = {}
        marker = hold_marker

        def wrap(stage: driver.Stage, before: Callable[[Batch], None]) -> driver.Stage:
            inner = stage.per_batch
            assert inner is not None

            def per_batch(batch: Batch) -> None:
                before(batch)
                inner(batch)
                if stage.name == "record":
                    for key, ev in self.recorded.items():
                        if any(key in j.raw for j in batch.jobs):
                            ev.set()

            return driver.Stage(stage.name, per_batch=per_batch, txn=stage.txn)

        def hold(batch: Batch) -> None:
            if any(marker in j.raw for j in batch.jobs):
                self.holding.set()
                assert self.release.wait(WAIT), "never released"

        stages = []
        for s in driver.PIPELINE:
            if s.name == "converse":
                stages.append(wrap(s, hold))
            elif s.name == "record":
                stages.append(wrap(s, lambda b: None))
            else:
                stages.append(s)
        monkeypatch.setattr(driver, "PIPELINE", tuple(stages))

    def record_event(self, marker: bytes) -> threading.Event:
        self.recorded[marker] = threading.Event()
        return self.recorded[marker]


def test_two_inboxes_team_mail_is_processed_while_the_other_inbox_is_locked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = Hooks(monkeypatch, b"HOLD-A")
    a_inbox, _ = world.inbox("Support A", [world.admin_id])
    b_inbox, _ = world.inbox("Support B", [world.admin_id])
    a_cid = world.connect("a@ours.example", kind="team", inbox_id=a_inbox)
    b_cid = world.connect("b@ours.example", kind="team", inbox_id=b_inbox)
    # Different companies: no contact or company row that both batches create.
    a_ids = team_mail(
        world, a_inbox, a_cid, [message("ken@acme.example", ["a@ours.example"], subject="HOLD-A")]
    )
    b_ids = team_mail(
        world, b_inbox, b_cid, [message("amy@globex.example", ["b@ours.example"], subject="B")]
    )
    deps = Deps(world.sessions)
    with ThreadPoolExecutor(2) as pool:
        a: Future = pool.submit(driver.process_many, a_ids, deps, "log.localhost")
        try:
            assert hooks.holding.wait(WAIT), "batch A never reached converse"
            b: Future = pool.submit(driver.process_many, b_ids, deps, "log.localhost")
            # Inbox B's batch is done while inbox A's batch still holds its lock.
            [job_b] = b.result(timeout=WAIT).jobs
            assert not a.done()
        finally:
            hooks.release.set()
        [job_a] = a.result(timeout=WAIT).jobs
    assert (job_a.outcome, job_b.outcome) == ("logged", "logged")
    assert job_a.conversation_id and job_b.conversation_id
    assert job_a.conversation_id != job_b.conversation_id


def test_a_second_batch_of_one_inbox_records_while_the_first_holds_the_lock_and_threads_right(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch B (a reply) read its threading before batch A (the thread's first message) was
    committed, and records its email meanwhile; under the lock it finds A's conversation.
    (Two batches creating the same new contact do wait for each other: a unique key, not the
    inbox lock — so the two messages here come from different companies.)"""
    hooks = Hooks(monkeypatch, b"Order 77")
    b_recorded = hooks.record_event(b"Re: Order 77")
    inbox, _ = world.inbox("Support", [world.admin_id])
    cid = world.connect("support@ours.example", kind="team", inbox_id=inbox)
    first = message(
        "ken@acme.co.jp",
        ["support@ours.example"],
        subject="Order 77",
        message_id="<o77@acme.co.jp>",
    )
    reply = message(  # another sender's domain: no contact or company row both batches create
        "amy@globex.example", ["support@ours.example"], subject="Re: Order 77",
        message_id="<o78@acme.co.jp>", headers={"In-Reply-To": "<o77@acme.co.jp>"},
    )  # fmt: skip
    a_ids = team_mail(world, inbox, cid, [first])
    b_ids = team_mail(world, inbox, cid, [reply])
    deps = Deps(world.sessions)
    with ThreadPoolExecutor(2) as pool:
        a: Future = pool.submit(driver.process_many, a_ids, deps, "log.localhost")
        try:
            assert hooks.holding.wait(WAIT), "batch A never reached converse"
            b: Future = pool.submit(driver.process_many, b_ids, deps, "log.localhost")
            assert b_recorded.wait(WAIT), "batch B waited for A's lock before recording"
            assert not a.done() and not b.done()
        finally:
            hooks.release.set()
        [job_a] = a.result(timeout=WAIT).jobs
        [job_b] = b.result(timeout=WAIT).jobs
    assert job_b.thread is not None and job_b.thread.how == "references"
    assert job_a.conversation_id == job_b.conversation_id is not None
    emails = {e.subject: e.conversation_id for e in world.emails()}
    assert emails["Order 77"] == emails["Re: Order 77"]


def test_a_reply_a_rule_skipped_as_new_is_run_again_when_its_thread_appears_under_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§5: rules apply to a new conversation only. B's reply looked new when B read its
    threading (A not committed yet), so a rule skipped it; under the lock it continues A's
    conversation: the batch runs again, locks first, and the reply is logged in it."""
    from shared.rules.schema import Rule
    from shared.services.inboxes import replace_rules

    hooks = Hooks(monkeypatch, b"Order 88")
    inbox, _ = world.inbox("Support", [world.admin_id])
    cid = world.connect("support@ours.example", kind="team", inbox_id=inbox)
    with transaction(world.sessions) as s:
        rule = Rule.model_validate(
            {"name": "no stray replies", "conditions": {"subject_contains": ["Re:"]},
             "action": {"type": "skip"}}
        )  # fmt: skip
        replace_rules(session=s, principal=world.admin, inbox_id=inbox, rules=[rule])
    first = message(
        "ken@acme.co.jp",
        ["support@ours.example"],
        subject="Order 88",
        message_id="<o88@acme.co.jp>",
    )
    reply = message(  # another sender's domain: no contact or company row both batches create
        "amy@globex.example", ["support@ours.example"], subject="Re: Order 88",
        message_id="<o89@acme.co.jp>", headers={"In-Reply-To": "<o88@acme.co.jp>"},
    )  # fmt: skip
    b_recorded = hooks.record_event(b"Re: Order 88")
    a_ids = team_mail(world, inbox, cid, [first])
    b_ids = team_mail(world, inbox, cid, [reply])
    deps = Deps(world.sessions)
    with ThreadPoolExecutor(2) as pool:
        a: Future = pool.submit(driver.process_many, a_ids, deps, "log.localhost")
        try:
            assert hooks.holding.wait(WAIT), "batch A never reached converse"
            b: Future = pool.submit(driver.process_many, b_ids, deps, "log.localhost")
            assert b_recorded.wait(WAIT), "batch B waited for A's lock before recording"
        finally:
            hooks.release.set()
        [job_a] = a.result(timeout=WAIT).jobs
        [job_b] = b.result(timeout=WAIT).jobs
    assert job_b.outcome == "logged", job_b.decision
    assert job_b.routing is None
    assert job_a.conversation_id == job_b.conversation_id is not None
    decisions = {
        d.subject: d for d in world.decisions() if d.subject in ("Order 88", "Re: Order 88")
    }
    assert decisions["Re: Order 88"].outcome == "logged"
    assert decisions["Re: Order 88"].thread == {
        "how": "references",
        "conversation_id": job_a.conversation_id,
    }

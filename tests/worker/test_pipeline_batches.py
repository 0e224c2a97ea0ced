"""The batched pipeline: many messages per transaction, and one bad message never takes the
others down (both databases)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import (
    Decision,
    EmailCompany,
    EmailContact,
    Failure,
    LoggedEmail,
    StoredMessage,
)
from shared.intake import IncomingMessage, store_messages
from tests.e2e.mail import message
from tests.support.world import World, new_world
from worker.pipeline import driver
from worker.pipeline.job import Deps


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    engine = make_engine(db_url)
    yield new_world(make_session_factory(engine))
    engine.dispose()


def store(world: World, raws: list[bytes], source: str = "bcc") -> list[int]:
    with transaction(world.sessions) as s:
        return store_messages(
            session=s,
            items=[
                IncomingMessage(account_id=world.account_id, source=source, raw=r) for r in raws
            ],
        )


def test_a_batch_with_the_same_message_twice_logs_it_once(world: World) -> None:
    raw = message("alice@ours.example", ["ken@acme.co.jp"], message_id="<same@x.example>")
    other = message("alice@ours.example", ["ken@acme.co.jp", "amy@acme.co.jp"])
    ids = store(world, [raw, other, raw])
    jobs = driver.process_many(ids, Deps(world.sessions), "log.localhost").jobs
    assert [j.outcome for j in jobs] == ["logged", "logged", "duplicate"]
    assert jobs[0].email_id == jobs[2].email_id
    assert len(world.emails()) == 2 and set(world.contacts()) == {
        "ken@acme.co.jp",
        "amy@acme.co.jp",
    }
    with world.sessions() as s:
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(Decision)
                .where(Decision.stored_message_id.in_(ids))
            )
            == 3
        )
    # A redelivered batch finds nothing left to do.
    assert driver.process_many(ids, Deps(world.sessions), "log.localhost").jobs == []


def test_a_crashing_message_is_retried_alone_then_becomes_a_failure(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = store(world, [message("alice@ours.example", [f"c{i}@acme.co.jp"]) for i in range(5)])
    poison = ids[2]
    real_gather = driver.gather

    def exploding_gather(job, batch):  # type: ignore[no-untyped-def]
        if job.stored_id == poison:
            raise RuntimeError("stage crashed")
        real_gather(job, batch)

    monkeypatch.setattr(
        driver,
        "PIPELINE",
        tuple(
            driver.Stage("gather", per_message=exploding_gather) if s.name == "gather" else s
            for s in driver.PIPELINE
        ),
    )
    deps = Deps(world.sessions)
    jobs = driver.process_many(ids, deps, "log.localhost").jobs
    assert {j.stored_id: j.outcome for j in jobs} == {
        **{i: "logged" for i in ids if i != poison},
        poison: "",
    }
    assert driver.retry_ids(jobs) == [poison]
    for _ in range(driver.MAX_ATTEMPTS - 1):
        jobs = driver.process_many([poison], deps, "log.localhost").jobs
    assert jobs[0].outcome == "failed"
    with world.sessions() as s:
        row = s.get(StoredMessage, poison)
        [failure] = s.scalars(sa.select(Failure).where(Failure.stored_message_id == poison))
        assert row.status == "failed" and row.raw is not None  # the raw message is kept
        assert (failure.stage, failure.attempts) == ("gather", driver.MAX_ATTEMPTS)
        assert "stage crashed" in failure.error
        logged = s.scalar(
            sa.select(sa.func.count())
            .select_from(LoggedEmail)
            .where(LoggedEmail.account_id == world.account_id)
        )
    assert logged == 4
    # §2: the failed message still has its one decision, and a retry that succeeds replaces it.
    with world.sessions() as s:
        [decision] = s.scalars(sa.select(Decision).where(Decision.stored_message_id == poison))
        assert (decision.outcome, decision.codes) == ("failed", ["processing_failed"])
    from shared.services.failures import retry_failure

    with transaction(world.sessions) as s:
        assert retry_failure(session=s, account_id=None, failure_id=failure.id) == poison
    monkeypatch.undo()
    [job] = driver.process_many([poison], deps, "log.localhost").jobs
    assert job.outcome == "logged"
    with world.sessions() as s:
        outcomes = s.scalars(
            sa.select(Decision.outcome).where(Decision.stored_message_id == poison)
        ).all()
        assert outcomes == ["logged"]
        assert s.get(Failure, failure.id).resolved_at is not None


def test_a_reply_to_a_thread_begun_in_the_same_batch_is_a_reply_not_a_new_conversation(
    world: World,
) -> None:
    """§5: rules apply to a new conversation only. During an IMAP catch-up the first message
    and its reply often land in one batch; the reply must not be routed (here: skipped)."""
    from shared.rules.schema import Rule
    from shared.services.inboxes import replace_rules

    inbox_id, _ = world.inbox("Support", [world.admin_id])
    cid = world.connect("support@ours.example", kind="team", inbox_id=inbox_id)
    with transaction(world.sessions) as s:
        rule = Rule.model_validate(
            {"name": "no stray replies", "conditions": {"subject_contains": ["Re:"]},
             "action": {"type": "skip"}}
        )  # fmt: skip
        replace_rules(session=s, principal=world.admin, inbox_id=inbox_id, rules=[rule])
    first = message(
        "ken@acme.co.jp", ["support@ours.example"], subject="Order", message_id="<o1@acme.co.jp>"
    )
    reply = message(
        "ken@acme.co.jp", ["support@ours.example"], subject="Re: Order",
        message_id="<o2@acme.co.jp>", headers={"In-Reply-To": "<o1@acme.co.jp>"},
    )  # fmt: skip
    stray = message("amy@acme.co.jp", ["support@ours.example"], subject="Re: something else")
    with transaction(world.sessions) as s:
        ids = store_messages(
            session=s,
            items=[
                IncomingMessage(
                    account_id=world.account_id, source="team", raw=r, inbox_id=inbox_id,
                    connection_id=cid, folder="INBOX", folder_role="inbox", uidvalidity=1, uid=u,
                )
                for u, r in enumerate([first, reply, stray], start=1)
            ],
        )  # fmt: skip
    jobs = driver.process_many(ids, Deps(world.sessions), "log.localhost").jobs
    assert [j.outcome for j in jobs] == ["logged", "logged", "skipped"]
    assert "skipped_by_rule" in jobs[2].decision.codes
    emails = {e.subject: e.conversation_id for e in world.emails()}
    assert set(emails) == {"Order", "Re: Order"}
    assert emails["Order"] == emails["Re: Order"] is not None


def test_contacts_created_earlier_in_a_batch_count_for_personal_mail_later_in_it(
    world: World,
) -> None:
    """Personal sync logs only to existing contacts. A contact a BCC creates counts as existing
    for the personal messages after it, whether or not both land in the same batch."""
    cid = world.connect("alice@ours.example", kind="personal", user_id=world.admin_id)
    bcc = message("alice@ours.example", ["newcomer@acme.co.jp"], message_id="<b1@ours.example>")
    personal = message("newcomer@acme.co.jp", ["alice@ours.example"], subject="Re: hello")
    with transaction(world.sessions) as s:
        [bcc_id] = store_messages(
            session=s, items=[IncomingMessage(account_id=world.account_id, source="bcc", raw=bcc)]
        )
        [personal_id] = store_messages(
            session=s,
            items=[
                IncomingMessage(
                    account_id=world.account_id, source="personal", raw=personal,
                    connection_id=cid, folder="INBOX", folder_role="inbox", uidvalidity=1, uid=1,
                )
            ],
        )  # fmt: skip
    jobs = driver.process_many([bcc_id, personal_id], Deps(world.sessions), "log.localhost").jobs
    assert [j.outcome for j in jobs] == ["logged", "logged"]
    [p] = [p for p in jobs[1].decision.participants if p.address == "newcomer@acme.co.jp"]
    assert p.action == "logged"  # an existing contact: personal sync never creates one
    assert len(world.contacts()) == 1


def test_replies_only_counts_a_thread_logged_earlier_in_the_same_batch(world: World) -> None:
    world.settings(personal_logging="replies_only")
    cid = world.connect("alice@ours.example", kind="personal", user_id=world.admin_id)
    bcc = message("alice@ours.example", ["ken@acme.co.jp"], message_id="<t1@ours.example>")
    reply = message(
        "ken@acme.co.jp", ["alice@ours.example"], subject="Re: Hello",
        headers={"In-Reply-To": "<t1@ours.example>"},
    )  # fmt: skip
    other = message("ken@acme.co.jp", ["alice@ours.example"], subject="Unrelated")
    with transaction(world.sessions) as s:
        ids = store_messages(
            session=s,
            items=[IncomingMessage(account_id=world.account_id, source="bcc", raw=bcc)]
            + [
                IncomingMessage(
                    account_id=world.account_id, source="personal", raw=r, connection_id=cid,
                    folder="INBOX", folder_role="inbox", uidvalidity=1, uid=u,
                )
                for u, r in ((1, reply), (2, other))
            ],
        )  # fmt: skip
    jobs = driver.process_many(ids, Deps(world.sessions), "log.localhost").jobs
    assert [j.outcome for j in jobs] == ["logged", "logged", "skipped"]
    assert list(jobs[2].decision.codes) == ["not_a_reply"]


def test_timeline_links_carry_their_emails_sort_key(world: World) -> None:
    """Each contact and company link holds its email's (coalesce(date, received_at),
    received_at), the key its timeline index orders by — for a new email, an undated one, and
    a copy that arrives later and finds the email already logged."""
    dated = message("alice@ours.example", ["ken@acme.co.jp"], message_id="<d@x.example>")
    undated = message("alice@ours.example", ["amy@acme.co.jp"]).replace(b"Date: ", b"X-Was: ")
    driver.process_many(store(world, [dated, undated]), Deps(world.sessions), "log.localhost")
    later = store(world, [dated], source="forward")
    driver.process_many(later, Deps(world.sessions), "log.localhost")
    with world.sessions() as s:
        for link in (EmailContact, EmailCompany):
            rows = s.execute(
                sa.select(
                    link.email_sort_at,
                    link.email_received_at,
                    LoggedEmail.date,
                    LoggedEmail.received_at,
                )
                .join(LoggedEmail, LoggedEmail.id == link.email_id)
                .where(LoggedEmail.account_id == world.account_id)
            ).all()
            assert len(rows) == 2, link
            for sort_at, received, date, email_received in rows:
                assert (sort_at, received) == (date or email_received, email_received)
            assert {r.date is None for r in rows} == {True, False}

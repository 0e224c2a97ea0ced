"""Threading lookups in an inbox of many conversations (§5): right answers, and on PostgreSQL
index ranges of just the keys asked for — the same work with 10 or 100,000 conversations.

The inbox is filled in bulk (conversations sharing one subject, as "Re: Invoice" does, each
with its own external participant and a member email with its own Message-ID), then real team
messages go through the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from shared.db.base import table_of
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Conversation, ConversationEmail, LoggedEmail
from shared.intake import IncomingMessage, store_messages
from tests.e2e.mail import message
from tests.support.world import World, new_world
from worker.pipeline import driver, thread_match
from worker.pipeline.job import Deps

MANY = 2000
SUBJECT = "Invoice"  # the thread subject (key) every conversation here shares
WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)  # tests.e2e.mail's Date


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    engine = make_engine(db_url)
    yield new_world(make_session_factory(engine))
    engine.dispose()


def fill(world: World, inbox_id: int) -> dict[int, int]:
    """MANY conversations, one email each; returns i -> conversation id."""
    convs, emails = table_of(Conversation), table_of(LoggedEmail)
    with transaction(world.sessions) as s:
        conv_ids = s.scalars(
            sa.insert(convs).returning(convs.c.id, sort_by_parameter_order=True),
            [
                {
                    "account_id": world.account_id, "inbox_id": inbox_id, "subject": "Invoice",
                    "thread_subject": SUBJECT, "external_address": f"c{i}@cust{i}.example",
                    "status": "open", "tags": [], "contact_ids": [], "message_count": 1,
                    "last_message_at": WHEN - timedelta(days=1), "created_at": WHEN,
                }
                for i in range(MANY)
            ],
        ).all()  # fmt: skip
        email_ids = s.scalars(
            sa.insert(emails).returning(emails.c.id, sort_by_parameter_order=True),
            [
                {
                    "account_id": world.account_id, "identity": f"bulk-{inbox_id}-{i}",
                    "message_id": f"bulk{i}.{inbox_id}@cust{i}.example", "subject": "Invoice",
                    "direction": "incoming", "references": [], "to": [], "cc": [],
                    "attachments": [], "received_at": WHEN, "visibility": "account",
                    "conversation_id": conv_ids[i], "snippet": "",
                }
                for i in range(MANY)
            ],
        ).all()  # fmt: skip
        s.execute(
            sa.insert(table_of(ConversationEmail)),
            [
                {"conversation_id": c, "email_id": e}
                for c, e in zip(conv_ids, email_ids, strict=True)
            ],
        )
    return dict(enumerate(conv_ids))


def team(world: World, inbox_id: int, cid: int, raws: list[bytes]) -> list[int]:
    with transaction(world.sessions) as s:
        got = store_messages(
            session=s,
            items=[
                IncomingMessage(
                    account_id=world.account_id, source="team", raw=r, inbox_id=inbox_id,
                    connection_id=cid, folder="INBOX", folder_role="inbox", uidvalidity=1, uid=u,
                )
                for u, r in enumerate(raws, start=1)
            ],
        )  # fmt: skip
    return [i for i in got if i is not None]


def test_thread_lookups_are_right_among_many_conversations(world: World) -> None:
    inbox_id, _ = world.inbox("Billing", [world.admin_id])
    cid = world.connect("billing@ours.example", kind="team", inbox_id=inbox_id)
    conv = fill(world, inbox_id)
    to = ["billing@ours.example"]
    by_reference = message(
        "someone@else.example", to, subject="Re: Invoice",
        headers={"In-Reply-To": f"<bulk1234.{inbox_id}@cust1234.example>"},
    )  # fmt: skip
    by_subject = message("c777@cust777.example", to, subject="RE: Invoice")
    new_person = message("nobody@new.example", to, subject="Invoice")
    jobs = driver.process_many(
        team(world, inbox_id, cid, [by_reference, by_subject, new_person]),
        Deps(world.sessions),
        "log.localhost",
    ).jobs
    got = [(j.thread.how, j.conversation_id) for j in jobs if j.thread is not None]
    assert got[0] == ("references", conv[1234])
    assert got[1] == ("subject", conv[777])
    assert got[2][0] == "new" and got[2][1] not in conv.values()


def test_on_postgresql_the_lookups_read_only_index_ranges_of_their_keys(
    postgresql_url: str,
) -> None:
    engine = make_engine(postgresql_url)
    world = new_world(make_session_factory(engine))
    inbox_id, _ = world.inbox("Billing", [world.admin_id])
    fill(world, inbox_id)
    with engine.connect() as c:
        c.exec_driver_sql("ANALYZE conversations, logged_emails, conversation_emails")
        ids = [f"bulk{i}.{inbox_id}@cust{i}.example" for i in (5, 50, 500)]
        emails = thread_match._emails_by_message_id(len(ids))
        since = WHEN - timedelta(days=30)
        keys = {"i0": inbox_id, "s0": SUBJECT, "e0": "c9@cust9.example", "t0": since}
        keys |= {"i1": inbox_id, "s1": SUBJECT, "e1": "c99@cust99.example", "t1": since}
        plans = {
            "emails": explain(c, emails, {"account": world.account_id, "ids": ids}),
            "subject": explain(c, thread_match._by_subject(2), keys),
        }
    engine.dispose()
    assert "ix_logged_emails_account_message_id" in plans["emails"], plans["emails"]
    assert "ix_conversations_inbox_thread" in plans["subject"], plans["subject"]
    for name, plan in plans.items():
        assert "Seq Scan" not in plan, (name, plan)
        # Rows read from indexes and tables: a few per key, not the inbox's thousands.
        assert max_rows(plan) <= 10, (name, plan)


def explain(conn: sa.Connection, stmt: sa.Executable, params: dict[str, object]) -> str:
    """EXPLAIN ANALYZE of a statement exactly as SQLAlchemy sends it (parameters expanded)."""

    def prefixed(*args: Any) -> tuple[str, Any]:
        statement, parameters = args[2], args[3]
        return "EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters

    event.listen(conn, "before_cursor_execute", prefixed, retval=True)
    try:
        return "\n".join(str(r[0]) for r in conn.execute(stmt, params))
    finally:
        event.remove(conn, "before_cursor_execute", prefixed)


def max_rows(plan: str) -> int:
    return max(int(n) for n in re.findall(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+)", plan))

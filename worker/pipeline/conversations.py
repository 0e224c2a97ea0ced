"""Attaching a team message to its conversation inside the record transaction (§5).

The inbox row is locked first, so threading, round-robin counters and conversation creation are
serialized per inbox even with many workers.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import (
    Conversation,
    ConversationEmail,
    LoggedEmail,
    RoundRobinCursor,
    TeamInbox,
)
from shared.mail.threading import thread_subject
from shared.rules.routing import pick_round_robin
from worker.pipeline.job import Batch, Job
from worker.pipeline.threading import external_address, find_conversation

DELIVERY_FAILED = "delivery_failed"
# Built once, executed with parameters: statement construction costs more than the round trip.
# Core tables, not the ORM entities: no ORM bulk-insert machinery around a one-row INSERT.
_CONVERSATIONS = Conversation.__table__
_INSERT_CONVERSATION = sa.insert(_CONVERSATIONS).returning(_CONVERSATIONS.c.id)
_INSERT_MEMBER = sa.insert(ConversationEmail.__table__)


def round_robin_key(rule_name: str | None, user_ids: list[int]) -> str:
    """The counters follow the rule (its name and users), not its position: inserting or
    reordering rules must not hand one rule's counts to another."""
    ident = f"{rule_name}\x00{','.join(map(str, sorted(set(user_ids))))}"
    return "rr-" + hashlib.sha256(ident.encode()).hexdigest()[:40]


def _round_robin(session: Session, job: Job, user_ids: list[int]) -> int:
    key = round_robin_key(job.routing.rule_name, user_ids)
    cursor = session.get(RoundRobinCursor, (job.inbox_id, key))
    if cursor is None:
        cursor = RoundRobinCursor(inbox_id=job.inbox_id, rule_key=key, counts={})
        session.add(cursor)
    counts = dict(cursor.counts or {})
    chosen = pick_round_robin(user_ids, counts)
    counts[str(chosen)] = counts.get(str(chosen), 0) + 1
    cursor.counts = counts
    return chosen


def _new_conversation(session: Session, job: Job, when: datetime) -> int:
    """One INSERT with the final values (routing applied); returns the new id."""
    content = job.content
    assert content is not None
    values: dict = {
        "account_id": job.account_id,
        "inbox_id": job.inbox_id,
        "subject": content.subject,
        "thread_subject": thread_subject(content.subject)[:500],
        "external_address": external_address(job),
        "status": "open",
        "tags": [],
        "contact_ids": sorted(set(job.contact_ids)),
        "message_count": 1,
        "last_message_at": when,
    }
    result = job.routing
    if result is not None and result.action is not None:
        action = result.action
        if action["type"] in ("assign_user", "assign_contact_owner"):
            values["assignee_id"] = action["user_id"]
        elif action["type"] == "round_robin":
            values["assignee_id"] = _round_robin(session, job, action["user_ids"])
        elif action["type"] == "close":
            values["status"] = "closed"
        values["tags"] = list(result.tags)
    return session.execute(_INSERT_CONVERSATION, values).scalar_one()


def attach(session: Session, job: Job, email_id: int, batch: Batch) -> int:
    """Put the logged email in its conversation; returns the conversation id."""
    if job.inbox_id not in batch.locked_inboxes:  # held until the batch commits
        session.execute(
            sa.select(TeamInbox.id).where(TeamInbox.id == job.inbox_id).with_for_update()
        )
        batch.locked_inboxes.add(job.inbox_id)  # type: ignore[arg-type]
    content, decision = job.content, job.decision
    assert content is not None and decision is not None
    when = content.date or job.received_at or utcnow()
    match = find_conversation(session, job)
    if match.conversation_id is None:
        conv_id = _new_conversation(session, job, when)
    else:
        conv = session.get(Conversation, match.conversation_id)
        assert conv is not None
        automated = content.kind in ("auto_reply", "bounce", "list")
        # A contact's reply reopens a closed conversation; automated mail never does.
        if conv.status == "closed" and decision.direction == "incoming" and not automated:
            conv.status = "open"
        if content.kind == "bounce" and DELIVERY_FAILED not in conv.tags:
            conv.tags = [*conv.tags, DELIVERY_FAILED]
        conv.contact_ids = sorted(set(conv.contact_ids or []) | set(job.contact_ids))
        conv.message_count = (conv.message_count or 0) + 1
        if conv.last_message_at is None or when > conv.last_message_at:
            conv.last_message_at = when
        conv_id = conv.id
    # Now, not at the end of the batch: a later message of this batch may thread on it.
    session.execute(_INSERT_MEMBER, {"conversation_id": conv_id, "email_id": email_id})
    batch.first_conversations.append({"e": email_id, "c": conv_id})
    return conv_id


def name_first_conversations(batch: Batch) -> None:
    """``logged_emails.conversation_id`` (what the email API shows) for the batch's emails
    that had none: one statement for the batch."""
    if not batch.first_conversations:
        return
    table = LoggedEmail.__table__
    batch.session.execute(
        sa.update(table)
        .where(table.c.id == sa.bindparam("e"), table.c.conversation_id.is_(None))
        .values(conversation_id=sa.bindparam("c")),
        batch.first_conversations,
    )
    batch.first_conversations.clear()


def converse(job: Job, batch: Batch) -> None:
    """Put a recorded team email in its conversation of this inbox, unless it is in one already
    (the same message again); another inbox that takes it in shows it too (§4)."""
    if job.decision is None or not job.decision.keep_in_conversation or job.inbox_id is None:
        return
    if job.outcome == "duplicate" and batch.session.scalar(
        sa.select(ConversationEmail.conversation_id)
        .join(Conversation, Conversation.id == ConversationEmail.conversation_id)
        .where(ConversationEmail.email_id == job.email_id, Conversation.inbox_id == job.inbox_id)
        .limit(1)
    ):
        return
    attach(batch.session, job, job.email_id, batch)  # type: ignore[arg-type]

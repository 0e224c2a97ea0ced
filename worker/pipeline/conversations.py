"""Stage ``converse``: a recorded team message joins the conversation the ``thread`` stage
found for it, or opens a new one with what its routing rule says (§5).

Runs under the inbox's lock (taken by ``prefetch`` for the batch transaction), so threading,
round-robin counters and conversation creation are serialized per inbox — and only per inbox.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import table_of, utcnow
from shared.db.models import (
    Conversation,
    ConversationEmail,
    LoggedEmail,
    RoundRobinCursor,
)
from shared.rules.routing import pick_round_robin
from worker.pipeline.job import Batch, Job
from worker.pipeline.thread_match import external_address, subject_key

DELIVERY_FAILED = "delivery_failed"
# Built once, executed with parameters: statement construction costs more than the round trip.
# Core tables, not the ORM entities: no ORM bulk-insert machinery around a one-row INSERT.
_CONVERSATIONS = table_of(Conversation)
_INSERT_CONVERSATION = sa.insert(_CONVERSATIONS).returning(_CONVERSATIONS.c.id)
_INSERT_MEMBER = sa.insert(table_of(ConversationEmail))


def round_robin_key(rule_name: str | None, user_ids: list[int]) -> str:
    """The counters follow the rule (its name and users), not its position: inserting or
    reordering rules must not hand one rule's counts to another."""
    ident = f"{rule_name}\x00{','.join(map(str, sorted(set(user_ids))))}"
    return "rr-" + hashlib.sha256(ident.encode()).hexdigest()[:40]


def _round_robin(session: Session, job: Job, user_ids: list[int]) -> int:
    assert job.routing is not None and job.inbox_id is not None
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
    values: dict[str, Any] = {
        "account_id": job.account_id,
        "inbox_id": job.inbox_id,
        "subject": content.subject,
        "thread_subject": subject_key(content.subject),
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
    new_id: int = session.execute(_INSERT_CONVERSATION, values).scalar_one()
    return new_id


def attach(session: Session, job: Job, email_id: int, batch: Batch) -> int:
    """Put the logged email in its conversation; returns the conversation id."""
    content, decision, match = job.content, job.decision, job.thread
    assert content is not None and decision is not None and match is not None
    when = content.date or job.received_at or utcnow()
    conv_id = match.conversation_id
    if conv_id is None and match.earlier is not None:
        conv_id = batch.conversations.get(match.earlier)
    if conv_id is None:
        conv_id = _new_conversation(session, job, when)
    else:
        conv = session.get(Conversation, conv_id)
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
    session.execute(_INSERT_MEMBER, {"conversation_id": conv_id, "email_id": email_id})
    batch.first_conversations.append({"e": email_id, "c": conv_id})
    batch.conversations[job.stored_id] = conv_id
    return conv_id


def name_first_conversations(batch: Batch) -> None:
    """``logged_emails.conversation_id`` (what the email API shows) for the batch's emails
    that had none: one statement for the batch."""
    if not batch.first_conversations:
        return
    table = table_of(LoggedEmail)
    batch.db().execute(
        sa.update(table)
        .where(table.c.id == sa.bindparam("e"), table.c.conversation_id.is_(None))
        .values(conversation_id=sa.bindparam("c")),
        batch.first_conversations,
    )
    batch.first_conversations.clear()


def converse(job: Job, batch: Batch) -> None:
    """Put a recorded team email in its conversation of this inbox, unless it is in one already
    (the same message again); another inbox that takes it in shows it too (§4)."""
    decision = job.decision
    if (
        decision is None
        or not decision.keep_in_conversation
        or job.inbox_id is None
        or job.email_id is None
        or job.thread is None
    ):
        return
    session = batch.db()
    if job.outcome == "duplicate":
        existing = session.scalar(
            sa.select(ConversationEmail.conversation_id)
            .join(Conversation, Conversation.id == ConversationEmail.conversation_id)
            .where(
                ConversationEmail.email_id == job.email_id, Conversation.inbox_id == job.inbox_id
            )
            .limit(1)
        )
        if existing:
            job.conversation_id = existing
            batch.conversations[job.stored_id] = existing
            return
    job.conversation_id = attach(session, job, job.email_id, batch)

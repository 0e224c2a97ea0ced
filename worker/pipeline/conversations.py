"""Stage ``converse``: a recorded team message joins the conversation the ``thread`` stage
found for it, or opens a new one with what its routing rule says (§5).

Runs under the inbox's lock (taken by ``lookup`` and held until the batch transaction ends), so
threading, round-robin counters and conversation creation are serialized per inbox — and only
per inbox.
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


def _new_values(session: Session, job: Job, when: datetime) -> dict[str, Any]:
    """A new conversation's row, with its routing applied."""
    content = job.content
    assert content is not None
    values: dict[str, Any] = {
        "account_id": job.account_id,
        "inbox_id": job.inbox_id,
        "subject": content.subject,
        "thread_subject": subject_key(content.subject),
        "external_address": external_address(job),
        "status": "open",
        "assignee_id": None,
        "tags": [],
        "contact_ids": [],
        "message_count": 0,
        "last_message_at": None,
        "created_at": utcnow(),
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
    return values


def _join(conv: dict[str, Any], job: Job, when: datetime, opener: bool) -> None:
    """What one more message changes on its conversation (``conv``: the row's values)."""
    content, decision = job.content, job.decision
    assert content is not None and decision is not None
    automated = content.kind in ("auto_reply", "bounce", "list")
    # A contact's reply reopens a closed conversation; automated mail never does (and the
    # message that opens a conversation never reopens what its routing rule closed).
    if (
        not opener
        and conv["status"] == "closed"
        and decision.direction == "incoming"
        and not automated
    ):
        conv["status"] = "open"
    if not opener and content.kind == "bounce" and DELIVERY_FAILED not in conv["tags"]:
        conv["tags"] = [*conv["tags"], DELIVERY_FAILED]
    conv["contact_ids"] = sorted(set(conv["contact_ids"] or []) | set(job.contact_ids))
    conv["message_count"] = (conv["message_count"] or 0) + 1
    if conv["last_message_at"] is None or when > conv["last_message_at"]:
        conv["last_message_at"] = when


_CHANGED = ("status", "tags", "contact_ids", "message_count", "last_message_at")
_READ = sa.select(_CONVERSATIONS.c.id, *(_CONVERSATIONS.c[k] for k in _CHANGED)).where(
    _CONVERSATIONS.c.id.in_(sa.bindparam("ids", expanding=True))
)
_UPDATE = (
    sa.update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == sa.bindparam("cid"))
    .values({k: sa.bindparam(k, type_=_CONVERSATIONS.c[k].type) for k in _CHANGED})
)


def converse(batch: Batch) -> None:
    """Put the batch's recorded team emails in their conversations of their inboxes, unless
    in one already (the same message again); another inbox that takes it in shows it too (§4).

    A batch stage, in a fixed number of statements whatever the batch's size (they run under
    the inbox locks): the existing conversations read at once and updated in one executemany,
    the new ones inserted in one, the memberships in one. Messages are applied in batch order,
    so a reply later in the batch joins the conversation an earlier message opened.
    """
    jobs = [j for j in batch.live if _in_conversation(j)]
    if not jobs:
        return
    session = batch.db()
    _already_in(session, batch, [j for j in jobs if j.outcome == "duplicate"])
    # Which conversation each message joins: an existing id, or ("new", the opener's stored id).
    target: dict[int, int | tuple[str, int]] = {}
    new: dict[int, dict[str, Any]] = {}
    for job in jobs:
        if job.conversation_id is not None:
            continue
        match = job.thread
        assert match is not None
        if match.conversation_id is not None:
            target[job.stored_id] = match.conversation_id
        elif match.earlier is not None and match.earlier in target:
            target[job.stored_id] = target[match.earlier]
        elif match.earlier is not None and match.earlier in batch.conversations:
            target[job.stored_id] = batch.conversations[match.earlier]
        else:
            target[job.stored_id] = ("new", job.stored_id)
            new[job.stored_id] = _new_values(session, job, _when(job))
    existing_ids = sorted({t for t in target.values() if isinstance(t, int)})
    rows: dict[int, dict[str, Any]] = {}
    if existing_ids:
        for row in session.execute(_READ, {"ids": existing_ids}).mappings():
            rows[row["id"]] = {k: row[k] for k in _CHANGED}
            rows[row["id"]]["tags"] = list(rows[row["id"]]["tags"] or [])
    changed: set[int] = set()
    for job in jobs:
        t = target.get(job.stored_id)
        if t is None:
            continue
        if isinstance(t, int):
            _join(rows[t], job, _when(job), opener=False)
            changed.add(t)
        else:
            _join(new[t[1]], job, _when(job), opener=t[1] == job.stored_id)
    if new:
        openers = list(new)
        ids = session.scalars(
            sa.insert(_CONVERSATIONS).returning(_CONVERSATIONS.c.id, sort_by_parameter_order=True),
            [new[k] for k in openers],
        ).all()
        made = dict(zip(openers, ids, strict=True))
        for sid, t in target.items():
            if not isinstance(t, int):
                target[sid] = made[t[1]]
    if changed:
        session.execute(_UPDATE, [{"cid": cid, **rows[cid]} for cid in sorted(changed)])
    members = []
    for job in jobs:
        if job.stored_id not in target:
            continue
        cid = target[job.stored_id]
        assert isinstance(cid, int) and job.email_id is not None
        job.conversation_id = cid
        batch.conversations[job.stored_id] = cid
        batch.first_conversations.append({"e": job.email_id, "c": cid})
        members.append({"conversation_id": cid, "email_id": job.email_id})
    if members:
        session.execute(_INSERT_MEMBER, members)


def _in_conversation(job: Job) -> bool:
    decision = job.decision
    return not (
        decision is None
        or not decision.keep_in_conversation
        or job.inbox_id is None
        or job.email_id is None
        or job.thread is None
    )


def _when(job: Job) -> datetime:
    assert job.content is not None
    return job.content.date or job.received_at or utcnow()


def _already_in(session: Session, batch: Batch, duplicates: list[Job]) -> None:
    """A duplicate already in a conversation of its inbox stays there (one statement)."""
    if not duplicates:
        return
    found: dict[tuple[int, int], int] = {}
    for email_id, inbox_id, conv_id in session.execute(
        sa.select(
            ConversationEmail.email_id, Conversation.inbox_id, ConversationEmail.conversation_id
        )
        .join(Conversation, Conversation.id == ConversationEmail.conversation_id)
        .where(ConversationEmail.email_id.in_(sorted({j.email_id for j in duplicates})))
    ):
        found.setdefault((email_id, inbox_id), conv_id)
    for job in duplicates:
        assert job.email_id is not None and job.inbox_id is not None
        existing = found.get((job.email_id, job.inbox_id))
        if existing:
            job.conversation_id = existing
            batch.conversations[job.stored_id] = existing


_EMAILS = table_of(LoggedEmail)
# By primary key alone, the condition in the value: "WHERE id = :e AND conversation_id IS NULL"
# lets the planner read ix_logged_emails_conversation_id for NULL — every email ever updated
# away from NULL leaves a dead entry there until a vacuum, so that read grows with the account.
_NAME_FIRST = (
    sa.update(_EMAILS)
    .where(_EMAILS.c.id == sa.bindparam("e"))
    .values(conversation_id=sa.func.coalesce(_EMAILS.c.conversation_id, sa.bindparam("c")))
)


def name_first_conversations(batch: Batch) -> None:
    """``logged_emails.conversation_id`` (what the email API shows) for the batch's emails
    that had none: one statement for the batch."""
    if not batch.first_conversations:
        return
    batch.db().execute(_NAME_FIRST, batch.first_conversations)
    batch.first_conversations.clear()

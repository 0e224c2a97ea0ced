"""Stage ``finish``: the decisions, in one multi-row INSERT, and the stored rows marked done.

Last, because a decision carries everything the stages found — its outcome, the conversation a
team message joined and how it was threaded, the routing trace of a new conversation (Mailman's
rule hits and misses, on the record). The unique decision per stored message makes a
redelivered task a no-op. A retry that succeeds resolves the message's failure records.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from shared.db.base import clip, table_of, utcnow
from shared.db.bulk import insert_each
from shared.db.models import Decision, StoredMessage
from shared.rules import codes as c
from shared.services.failures import resolve_failures
from worker.pipeline.conversations import name_first_conversations
from worker.pipeline.job import Batch, Job


def routing_view(job: Job) -> dict[str, Any] | None:
    r = job.routing
    if r is None:
        return None
    return {
        "matched": r.matched,
        "rule_name": r.rule_name,
        "action": r.action,
        "trace": list(r.trace),
    }


def thread_view(job: Job) -> dict[str, Any] | None:
    if job.thread is None:
        return None
    return {"how": job.thread.how, "conversation_id": job.conversation_id}


def decision_values(job: Job) -> dict[str, Any]:
    d, content = job.decision, job.content
    assert d is not None
    subject = content.subject if content else (job.parsed.subject if job.parsed else None)
    return {
        "account_id": job.account_id,
        "stored_message_id": job.stored_id,
        "received_at": job.received_at or utcnow(),
        "source": job.source,
        "message_id": None if d.redact or content is None else clip(content.message_id, 998),
        "subject": None if d.redact else subject,
        "outcome": job.outcome,
        "codes": list(d.codes) + ([c.DUPLICATE_MESSAGE] if job.outcome == c.DUPLICATE else []),
        "participants": [] if d.redact else [p.as_dict() for p in d.participants],
        "email_id": job.email_id,
        "acting_user_id": d.acting_user_id,
        "connection_id": job.connection_id,
        "private_to_user_id": d.private_to_user_id,
        "inbox_id": job.inbox_id,
        "thread": None if d.redact else thread_view(job),
        "routing": None if d.redact else routing_view(job),
    }


def finish(batch: Batch) -> None:
    session = batch.db()
    name_first_conversations(batch)
    jobs = batch.live
    decided = [j for j in jobs if j.outcome != "already_recorded" and j.decision is not None]
    if decided:
        insert_each(session, table_of(Decision), [decision_values(j) for j in decided])
    now = utcnow()
    done = [j.stored_id for j in jobs]
    if done:
        stored = table_of(StoredMessage)  # the table, not the entity: no ORM synchronization
        session.execute(
            sa.update(stored)
            .where(stored.c.id.in_(done))
            .values(status="done", processed_at=now, updated_at=now, last_stop=None)
        )
        resolve_failures(session=session, stored_message_ids=done)  # a retry that succeeded
    drop = [j.stored_id for j in jobs if not j.keep_raw]
    if drop:
        session.execute(sa.update(StoredMessage).where(StoredMessage.id.in_(drop)).values(raw=None))

"""Stage ``route``: the inbox's routing rules, for a new team conversation only (§5)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from shared.db.models import Connection
from shared.rules.routing import route as evaluate
from shared.services.inboxes import get_rules
from shared.services.routing import routing_facts
from worker.pipeline.job import Batch, Job
from worker.pipeline.threading import find_conversation, thread_keys, threads_with_earlier


def route(job: Job, batch: Batch) -> None:
    """Rules apply to a new conversation only: look the thread up just when rules exist."""
    if job.source != "team" or job.inbox_id is None or job.content is None:
        return
    session = batch.session
    if job.inbox_id not in batch.rules:
        batch.rules[job.inbox_id] = get_rules(session=session, inbox_id=job.inbox_id)
    rules = batch.rules[job.inbox_id]
    if not rules:
        return
    earlier = batch.threads.setdefault(job.inbox_id, [])
    job.thread = find_conversation(session, job)
    if job.thread.conversation_id is not None or threads_with_earlier(job, earlier):
        earlier.append(thread_keys(job))
        return  # replies keep the assignee (§5), also to a thread begun earlier in this batch
    address = (
        session.scalar(sa.select(Connection.address).where(Connection.id == job.connection_id))
        if job.connection_id
        else None
    )
    job.routing = evaluate(
        rules,
        routing_facts(
            session=session, account_id=job.account_id, pm=job.parsed, connection_address=address
        ),
    )
    if job.routing.skip and job.facts is not None:
        job.facts = dataclasses.replace(job.facts, skipped_by_rule=True)
    else:
        earlier.append(thread_keys(job))

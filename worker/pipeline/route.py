"""Stage ``route``: the inbox's routing rules, for a new team conversation only (§5)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from shared.db.models import Connection
from shared.rules.routing import route as evaluate
from shared.services.inboxes import get_rules
from shared.services.routing import routing_facts
from worker.pipeline.job import Batch, Job


def route(job: Job, batch: Batch) -> None:
    """Rules apply to a new conversation only; replies keep their conversation's assignee,
    also replies to a thread begun earlier in this batch."""
    if job.thread is None or not job.thread.is_new or job.inbox_id is None:
        return
    session = batch.db()
    if job.inbox_id not in batch.rules:
        batch.rules[job.inbox_id] = get_rules(session=session, inbox_id=job.inbox_id)
    rules = batch.rules[job.inbox_id]
    if not rules or job.parsed is None:
        return
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

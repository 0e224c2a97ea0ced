"""Stage ``route``: the inbox's routing rules, for a new team conversation only (§5)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from shared.db.models import Connection, Contact, User
from shared.rules.routing import RoutingFacts
from shared.rules.routing import route as evaluate
from shared.services.inboxes import get_rules
from worker.pipeline.job import Batch, Job
from worker.pipeline.threading import find_conversation


def received_at_addresses(job: Job, connection_address: str | None) -> frozenset[str]:
    """The team address(es) that received the message: the connection's address, else the
    To/Cc/Delivered-To of the message."""
    pm = job.parsed
    assert pm is not None
    found = {a.address for a in (*pm.to, *pm.cc, *pm.delivered_to)}
    if connection_address:
        found.add(connection_address)
    return frozenset(found)


def routing_facts(
    session: sa.orm.Session, job: Job, connection_address: str | None
) -> RoutingFacts:
    pm, content = job.parsed, job.content
    assert pm is not None and content is not None
    sender = content.from_.address if content.from_ else None
    contact = (
        session.scalar(
            sa.select(Contact).where(Contact.account_id == job.account_id, Contact.email == sender)
        )
        if sender
        else None
    )
    active = frozenset(
        session.scalars(
            sa.select(User.id).where(User.account_id == job.account_id, User.active.is_(True))
        )
    )
    return RoutingFacts(
        from_address=sender,
        to_addresses=received_at_addresses(job, connection_address),
        subject=content.subject,
        body=content.text,
        headers=pm.header,
        is_contact=contact is not None,
        contact_owner_id=contact.owner_id if contact else None,
        active_user_ids=active,
    )


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
    job.thread = find_conversation(session, job)
    if job.thread.conversation_id is not None:
        return  # replies keep the assignee (§5)
    address = (
        session.scalar(sa.select(Connection.address).where(Connection.id == job.connection_id))
        if job.connection_id
        else None
    )
    job.routing = evaluate(rules, routing_facts(session, job, address))
    if job.routing.skip and job.facts is not None:
        job.facts = dataclasses.replace(job.facts, skipped_by_rule=True)

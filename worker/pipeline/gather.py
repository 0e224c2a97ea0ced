"""Stages ``prefetch`` and ``gather``: the account's facts and the message's facts the
decision needs.

``prefetch`` reads once per batch what every message needs — account facts (users, internal
addresses, settings; cached per account *version*, which every change to users, connections,
inboxes or settings bumps) and the existing contacts. ``gather`` then builds each message's
facts. Neither takes a lock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from shared.db.models import Account, Connection, Contact, LoggedEmail, Outbox
from shared.mail import Address
from shared.mail.classify import is_noreply_address
from shared.rules.logging_decision import MessageFacts, Person
from shared.services.account_facts import load_account_facts
from worker.pipeline.job import Batch, Job

CACHE_LIMIT = 1000


def _person(a: Address | None) -> Person | None:
    return Person(a.address, a.name) if a is not None and a.address else None


def _people(items: tuple[Address, ...]) -> tuple[Person, ...]:
    return tuple(Person(a.address, a.name) for a in items if a.address)


def _participants(job: Job) -> list[Address]:
    c = job.content
    if c is None:
        return []
    bcc = job.parsed.bcc if job.source == "sent" and job.parsed else ()
    return [a for a in (c.from_, *c.to, *c.cc, *bcc) if a is not None and a.address]


def prefetch(batch: Batch) -> None:
    """Account facts (cached by version) and existing contacts for the batch (no lock: the
    team inboxes' locks are taken later, by ``lookup``, to hold them as briefly as possible)."""
    session, cache, jobs = batch.db(), batch.deps.facts_cache, batch.live
    account_ids = sorted({j.account_id for j in jobs})
    for account in session.scalars(sa.select(Account).where(Account.id.in_(account_ids))):
        key = (account.id, account.config_version)
        if key not in cache:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = load_account_facts(session, account, batch.logging_domain)
        batch.accounts[account.id] = cache[key]
    _unlogged_sends(batch)
    for account_id in account_ids:
        addresses = sorted(
            {a.address for j in jobs if j.account_id == account_id for a in _participants(j)}
        )
        batch.contacts[account_id] = (
            set(
                session.scalars(
                    sa.select(Contact.email).where(
                        Contact.account_id == account_id, Contact.email.in_(addresses)
                    )
                )
            )
            if addresses
            else set()
        )


def _unlogged_sends(batch: Batch) -> None:
    """Which of the batch's personal Sent-folder copies went out through inboxlog with
    ``log: false`` (one indexed read per account, for those Message-IDs only)."""
    wanted: dict[int, set[str]] = {}
    for j in batch.live:
        mid = j.content.message_id if j.content is not None else None
        if j.source == "personal" and j.folder_role == "sent" and mid:
            wanted.setdefault(j.account_id, set()).add(mid)
    session = batch.db()
    for account_id, message_ids in wanted.items():
        batch.unlogged_sends[account_id] = set(
            session.scalars(
                sa.select(Outbox.message_id).where(
                    Outbox.account_id == account_id,
                    Outbox.message_id.in_(sorted(message_ids)),
                    Outbox.log.is_(False),
                )
            )
        )


def gather(job: Job, batch: Batch) -> None:
    pm, content = job.parsed, job.content
    assert pm is not None
    session = batch.db()
    job.account = batch.accounts[job.account_id]
    job.settings = job.account.settings
    extra: dict[str, Any] = {}
    if job.source == "forward":
        extra["requester"] = _person(pm.from_)
        extra["forward_status"] = job.forward.status if job.forward else "not_forward"
    if content is not None:
        from_, to, cc = content.from_, content.to, content.cc
        refs = [r for r in (content.in_reply_to, *content.references) if r]
    else:
        from_, to, cc, refs = None, (), (), []
    people = _participants(job)
    owner_id, is_reply, proven = None, False, True
    if job.source == "sent":
        owner_id = job.acting_user_id
        extra["bcc"] = _people(pm.bcc)
        extra["in_team_inbox"] = job.inbox_id is not None
    if job.source == "personal" and job.folder_role == "sent" and content is not None:
        unlogged = batch.unlogged_sends.get(job.account_id, set())
        extra["sent_unlogged"] = content.message_id in unlogged
    if job.source == "personal" and job.connection_id is not None:
        row = session.execute(
            sa.select(Connection.user_id, Connection.verified_at).where(
                Connection.id == job.connection_id
            )
        ).first()
        owner_id = row.user_id if row else None
        proven = bool(row and row.verified_at is not None)  # C7
        if refs and job.account.settings.personal_logging == "replies_only":
            earlier = batch.logged_message_ids.get(job.account_id, set())
            is_reply = any(r in earlier for r in refs) or (
                session.execute(
                    sa.select(sa.func.count())
                    .select_from(LoggedEmail)
                    .where(
                        LoggedEmail.account_id == job.account_id, LoggedEmail.message_id.in_(refs)
                    )
                ).scalar_one()
                > 0
            )
    # Contacts created earlier in this same batch count as existing.
    existing = batch.contacts.get(job.account_id, set())
    job.facts = MessageFacts(
        source=job.source,
        from_=_person(from_),
        to=_people(to),
        cc=_people(cc),
        sender=_person(pm.sender) if job.source != "forward" else None,
        kind=content.kind if content else pm.kind,
        in_sent_folder=job.folder_role == "sent",
        owner_id=owner_id,
        owner_proven=proven,
        is_reply_to_logged=is_reply,
        existing_contacts=frozenset(a.address for a in people if a.address in existing),
        noreply_addresses=frozenset(a.address for a in people if is_noreply_address(a)),
        sender_verdict=job.sender_verdict,
        **extra,
    )

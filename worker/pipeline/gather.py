"""Stage ``gather``: the account's facts and the message's facts the decision needs.

Account facts (users, internal addresses, settings) are cached per account *version*, which
every change to users, connections, inboxes or settings bumps; existing contacts are read
once per batch.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Account, Connection, Contact, LoggedEmail, TeamInbox, User
from shared.mail import Address
from shared.mail.classify import is_noreply_address
from shared.rules.logging_decision import AccountFacts, MessageFacts, Person, UserFacts
from shared.services.accounts import intake_address, settings_of
from worker.pipeline.job import Batch, Job

CACHE_LIMIT = 1000


def _person(a: Address | None) -> Person | None:
    return Person(a.address, a.name) if a is not None and a.address else None


def _people(items: tuple[Address, ...]) -> tuple[Person, ...]:
    return tuple(Person(a.address, a.name) for a in items if a.address)


def account_facts(session: Session, account: Account, logging_domain: str) -> AccountFacts:
    personal: dict[int, set[str]] = {}
    internal: set[str] = {
        intake_address(account.bcc_token, logging_domain),
        intake_address(account.forward_token, logging_domain),
    }
    for address, kind, user_id in session.execute(
        sa.select(Connection.address, Connection.kind, Connection.user_id).where(
            Connection.account_id == account.id
        )
    ):
        internal.add(address)
        if kind == "personal" and user_id is not None:
            personal.setdefault(user_id, set()).add(address)
    for token in session.scalars(
        sa.select(TeamInbox.forward_token).where(TeamInbox.account_id == account.id)
    ):
        internal.add(intake_address(token, logging_domain))
    users = []
    for u in session.scalars(sa.select(User).where(User.account_id == account.id)):
        addresses = frozenset({u.email} | personal.get(u.id, set()))
        internal |= addresses
        users.append(UserFacts(u.id, addresses, u.active, u.default_log, tuple(u.never_log or ())))
    return AccountFacts(settings_of(account), tuple(users), frozenset(internal))


def _participants(job: Job) -> list[Address]:
    c = job.content
    if c is None:
        return []
    return [a for a in (c.from_, *c.to, *c.cc) if a is not None and a.address]


def prefetch(batch: Batch, jobs: list[Job]) -> None:
    """Account facts (cached by version) and existing contacts for every job of the batch."""
    session, cache = batch.session, batch.deps.facts_cache
    account_ids = sorted({j.account_id for j in jobs})
    for account in session.scalars(sa.select(Account).where(Account.id.in_(account_ids))):
        key = (account.id, account.config_version)
        if key not in cache:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = account_facts(session, account, batch.logging_domain)
        batch.accounts[account.id] = cache[key]
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


def gather(job: Job, batch: Batch) -> None:
    pm, content = job.parsed, job.content
    assert pm is not None
    session = batch.session
    job.account = batch.accounts[job.account_id]
    job.settings = job.account.settings
    extra: dict = {}
    if job.source == "forward":
        extra["requester"] = _person(pm.from_)
        extra["forward_status"] = job.forward.status if job.forward else "not_forward"
    if content is not None:
        from_, to, cc = content.from_, content.to, content.cc
        refs = [r for r in (content.in_reply_to, *content.references) if r]
    else:
        from_, to, cc, refs = None, (), (), []
    people = _participants(job)
    owner_id, is_reply = None, False
    if job.source == "personal" and job.connection_id is not None:
        owner_id = session.scalar(
            sa.select(Connection.user_id).where(Connection.id == job.connection_id)
        )
        if refs and job.account.settings.personal_logging == "replies_only":
            earlier = batch.logged_message_ids.get(job.account_id, set())
            is_reply = any(r in earlier for r in refs) or (
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(LoggedEmail)
                    .where(
                        LoggedEmail.account_id == job.account_id, LoggedEmail.message_id.in_(refs)
                    )
                )
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
        is_reply_to_logged=is_reply,
        existing_contacts=frozenset(a.address for a in people if a.address in existing),
        noreply_addresses=frozenset(a.address for a in people if is_noreply_address(a)),
        **extra,
    )

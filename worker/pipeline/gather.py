"""Stage ``gather``: read the account's facts and the message's facts the decision needs."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Account, Connection, Contact, LoggedEmail, TeamInbox, User
from shared.mail import Address
from shared.mail.classify import is_noreply_address
from shared.rules.logging_decision import AccountFacts, MessageFacts, Person, UserFacts
from shared.services.accounts import intake_address, settings_of
from worker.pipeline.job import Deps, Job


def _person(a: Address | None) -> Person | None:
    return Person(a.address, a.name) if a is not None and a.address else None


def _people(items: tuple[Address, ...]) -> tuple[Person, ...]:
    return tuple(Person(a.address, a.name) for a in items if a.address)


def account_facts(session: Session, account_id: int, logging_domain: str) -> AccountFacts:
    account = session.get(Account, account_id)
    assert account is not None
    personal: dict[int, set[str]] = {}
    internal: set[str] = {
        intake_address(account.bcc_token, logging_domain),
        intake_address(account.forward_token, logging_domain),
    }
    for address, kind, user_id in session.execute(
        sa.select(Connection.address, Connection.kind, Connection.user_id).where(
            Connection.account_id == account_id
        )
    ):
        internal.add(address)
        if kind == "personal" and user_id is not None:
            personal.setdefault(user_id, set()).add(address)
    for token in session.scalars(
        sa.select(TeamInbox.forward_token).where(TeamInbox.account_id == account_id)
    ):
        internal.add(intake_address(token, logging_domain))
    users = []
    for u in session.scalars(sa.select(User).where(User.account_id == account_id)):
        addresses = frozenset({u.email} | personal.get(u.id, set()))
        internal |= addresses
        users.append(UserFacts(u.id, addresses, u.active, u.default_log, tuple(u.never_log or ())))
    return AccountFacts(settings_of(account), tuple(users), frozenset(internal))


def gather(job: Job, deps: Deps, logging_domain: str) -> None:
    pm, content = job.parsed, job.content
    assert pm is not None
    facts: dict = {}
    if job.source == "forward":
        facts["requester"] = _person(pm.from_)
        facts["forward_status"] = job.forward.status if job.forward else "not_forward"
    if content is not None:
        from_, to, cc = content.from_, content.to, content.cc
        refs = [r for r in (content.in_reply_to, *content.references) if r]
    else:
        from_, to, cc, refs = None, (), (), []
    sender = pm.sender if job.source != "forward" else None
    people = [a for a in (from_, *to, *cc) if a is not None and a.address]
    addresses = sorted({a.address for a in people})
    with deps.sessions() as session:
        job.account = account_facts(session, job.account_id, logging_domain)
        job.settings = job.account.settings
        existing = (
            set(
                session.scalars(
                    sa.select(Contact.email).where(
                        Contact.account_id == job.account_id, Contact.email.in_(addresses)
                    )
                )
            )
            if addresses
            else set()
        )
        owner_id = None
        is_reply = False
        if job.source == "personal" and job.connection_id is not None:
            owner_id = session.scalar(
                sa.select(Connection.user_id).where(Connection.id == job.connection_id)
            )
            if refs:
                is_reply = (
                    session.scalar(
                        sa.select(sa.func.count())
                        .select_from(LoggedEmail)
                        .where(
                            LoggedEmail.account_id == job.account_id,
                            LoggedEmail.message_id.in_(refs),
                        )
                    )
                    > 0
                )
    job.facts = MessageFacts(
        source=job.source,
        from_=_person(from_),
        to=_people(to),
        cc=_people(cc),
        sender=_person(sender),
        kind=content.kind if content else pm.kind,
        in_sent_folder=job.folder_role == "sent",
        owner_id=owner_id,
        is_reply_to_logged=is_reply,
        existing_contacts=frozenset(existing),
        noreply_addresses=frozenset(a.address for a in people if is_noreply_address(a)),
        **facts,
    )

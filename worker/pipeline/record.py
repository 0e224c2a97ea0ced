"""Stage ``record``: logged email, contacts, associations and decision in one transaction.

The unique (account, identity) key makes a second arrival of the same message a ``duplicate``
that only adds a source and associations; the unique decision per stored message makes a
redelivered task a no-op.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import (
    Contact,
    Decision,
    EmailCompany,
    EmailContact,
    EmailParticipant,
    EmailSource,
    LoggedEmail,
    StoredMessage,
)
from shared.db.upsert import insert_ignore
from shared.mail import Address
from shared.rules import codes as c
from shared.services.crm import company_domain_for, get_or_create_company
from worker.pipeline.conversations import attach
from worker.pipeline.job import Deps, Job


def _addr(a: Address) -> dict[str, Any]:
    return {"address": a.address, "name": a.name}


def _contact(
    session: Session, job: Job, address: str, name: str | None, create: bool
) -> Contact | None:
    found = session.scalar(
        sa.select(Contact).where(Contact.account_id == job.account_id, Contact.email == address)
    )
    if found or not create:
        return found
    settings = job.settings
    assert settings is not None and job.decision is not None
    company_id = None
    domain = company_domain_for(address) if settings.associate_companies else None
    if domain:
        company_id = get_or_create_company(
            session=session, account_id=job.account_id, domain=domain
        ).id
    # A new contact from bcc/forward gets the acting user as owner (§4).
    owner = job.decision.acting_user_id if job.source in ("bcc", "forward") else None
    try:
        with session.begin_nested():
            contact = Contact(
                account_id=job.account_id,
                email=address,
                name=name,
                owner_id=owner,
                company_id=company_id,
            )
            session.add(contact)
            session.flush()
            return contact
    except IntegrityError:  # another worker created it first: the constraint decided
        return session.scalars(
            sa.select(Contact).where(Contact.account_id == job.account_id, Contact.email == address)
        ).one()


def _insert_email(session: Session, job: Job) -> tuple[int, bool]:
    content, d = job.content, job.decision
    assert content is not None and d is not None
    values = {
        "account_id": job.account_id,
        "identity": content.identity,
        "message_id": content.message_id,
        "in_reply_to": content.in_reply_to,
        "references": list(content.references),
        "subject": content.subject,
        "from_address": content.from_.address if content.from_ else None,
        "from_name": content.from_.name if content.from_ else None,
        "to": [_addr(a) for a in content.to],
        "cc": [_addr(a) for a in content.cc],
        "date": content.date,
        "direction": d.direction,
        "kind": content.kind,
        "bounce_of_message_id": content.bounce_of_message_id,
        "forwarded_by_user_id": d.acting_user_id if job.source == "forward" else None,
        "logged_by_user_id": d.logged_by_user_id,
        "visibility": "account",
        "snippet": content.snippet,
        "text": content.text,
        "html": content.html,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in content.attachments
            if not a.inline
        ],
        "stored_message_id": job.stored_id,
        "received_at": job.received_at or utcnow(),
    }
    new_id = insert_ignore(session, LoggedEmail, values, ["account_id", "identity"], LoggedEmail.id)
    if new_id is not None:
        for role, people in (
            ("from", [content.from_] if content.from_ else []),
            ("to", content.to),
            ("cc", content.cc),
        ):
            for a in people:
                session.add(
                    EmailParticipant(email_id=new_id, role=role, address=a.address, name=a.name)
                )
        return new_id, True
    existing = session.scalar(
        sa.select(LoggedEmail.id).where(
            LoggedEmail.account_id == job.account_id, LoggedEmail.identity == content.identity
        )
    )
    assert existing is not None
    return existing, False


def _associate(session: Session, job: Job, email_id: int) -> None:
    d = job.decision
    assert d is not None
    for p in d.participants:
        if p.action == c.ACT_SKIPPED:
            continue
        contact = _contact(session, job, p.address, p.name, create=p.action == c.ACT_CREATED)
        if contact is None:
            continue
        insert_ignore(
            session,
            EmailContact,
            {"email_id": email_id, "contact_id": contact.id},
            ["email_id", "contact_id"],
        )
        if contact.company_id and job.settings and job.settings.associate_companies:
            insert_ignore(
                session,
                EmailCompany,
                {"email_id": email_id, "company_id": contact.company_id},
                ["email_id", "company_id"],
            )


def record(job: Job, deps: Deps) -> None:
    d = job.decision
    assert d is not None
    with deps.sessions() as session, session.begin():
        if session.scalar(
            sa.select(Decision.id).where(Decision.stored_message_id == job.stored_id)
        ):
            job.outcome = "already_recorded"
            _finish(session, job, keep_raw=True)
            return
        outcome, codes = d.outcome, list(d.codes)
        if d.outcome == c.LOGGED:
            email_id, created = _insert_email(session, job)
            if not created:
                outcome, codes = c.DUPLICATE, [*codes, c.DUPLICATE_MESSAGE]
            insert_ignore(
                session,
                EmailSource,
                {
                    "email_id": email_id,
                    "source": job.source,
                    "stored_message_id": job.stored_id,
                    "connection_id": job.connection_id,
                    "created_at": utcnow(),
                },
                ["email_id", "stored_message_id"],
            )
            _associate(session, job, email_id)
            if job.source == "team" and d.keep_in_conversation and job.inbox_id is not None:
                current = session.scalar(
                    sa.select(LoggedEmail.conversation_id).where(LoggedEmail.id == email_id)
                )
                if current is None:
                    attach(session, job, email_id)
            job.email_id = email_id
        content = job.content
        session.add(
            Decision(
                account_id=job.account_id,
                stored_message_id=job.stored_id,
                received_at=job.received_at or utcnow(),
                source=job.source,
                message_id=None if d.redact or content is None else content.message_id,
                subject=None if d.redact else (content.subject if content else job.parsed.subject),
                outcome=outcome,
                codes=codes,
                participants=[] if d.redact else [p.as_dict() for p in d.participants],
                email_id=job.email_id,
                acting_user_id=d.acting_user_id,
                connection_id=job.connection_id,
                private_to_user_id=d.private_to_user_id,
            )
        )
        job.outcome = outcome
        # Raw content of a skipped personal-inbox message is not kept (§4).
        _finish(
            session,
            job,
            keep_raw=not (
                job.source == "personal" and outcome != c.LOGGED and outcome != c.DUPLICATE
            ),
        )


def _finish(session: Session, job: Job, *, keep_raw: bool) -> None:
    values: dict[str, Any] = {"status": "done", "processed_at": utcnow(), "updated_at": utcnow()}
    if not keep_raw:
        values["raw"] = None
    session.execute(
        sa.update(StoredMessage).where(StoredMessage.id == job.stored_id).values(**values)
    )

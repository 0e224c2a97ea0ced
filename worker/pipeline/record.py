"""Stage ``record``: logged email, contacts, associations and the decision, in the batch's
transaction (one savepoint per message).

The unique (account, identity) key makes a second arrival of the same message a ``duplicate``
that only adds a source and associations; the unique decision per stored message makes a
redelivered task a no-op. Rows are written with a few multi-row statements per message.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import (
    Company,
    Contact,
    Decision,
    EmailCompany,
    EmailContact,
    EmailParticipant,
    EmailSource,
    LoggedEmail,
)
from shared.db.upsert import insert_ignore
from shared.mail import Address
from shared.rules import codes as c
from shared.services.crm import company_domain_for
from worker.pipeline.conversations import attach
from worker.pipeline.job import Batch, Job


def _addr(a: Address) -> dict[str, Any]:
    return {"address": a.address, "name": a.name}


def email_values(job: Job) -> dict[str, Any]:
    content, d = job.content, job.decision
    assert content is not None and d is not None
    return {
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


def participant_rows(email_id: int, content: Any) -> list[dict[str, Any]]:
    people = [("from", content.from_)] if content.from_ else []
    people += [("to", a) for a in content.to] + [("cc", a) for a in content.cc]
    return [
        {"email_id": email_id, "role": role, "address": a.address, "name": a.name}
        for role, a in people
    ]


def decision_values(job: Job) -> dict[str, Any]:
    d, content = job.decision, job.content
    assert d is not None
    subject = content.subject if content else (job.parsed.subject if job.parsed else None)
    return {
        "account_id": job.account_id,
        "stored_message_id": job.stored_id,
        "received_at": job.received_at or utcnow(),
        "source": job.source,
        "message_id": None if d.redact or content is None else content.message_id,
        "subject": None if d.redact else subject,
        "outcome": job.outcome,
        "codes": list(d.codes) + ([c.DUPLICATE_MESSAGE] if job.outcome == c.DUPLICATE else []),
        "participants": [] if d.redact else [p.as_dict() for p in d.participants],
        "email_id": job.email_id,
        "acting_user_id": d.acting_user_id,
        "connection_id": job.connection_id,
        "private_to_user_id": d.private_to_user_id,
    }


def _insert_email(session: Session, job: Job) -> tuple[int, bool]:
    content = job.content
    assert content is not None
    new_id = insert_ignore(
        session, LoggedEmail, email_values(job), ["account_id", "identity"], LoggedEmail.id
    )
    if new_id is not None:
        people = [("from", content.from_)] if content.from_ else []
        people += [("to", a) for a in content.to] + [("cc", a) for a in content.cc]
        if people:
            session.execute(
                sa.insert(EmailParticipant),
                [
                    {"email_id": new_id, "role": role, "address": a.address, "name": a.name}
                    for role, a in people
                ],
            )
        return new_id, True
    existing = session.scalar(
        sa.select(LoggedEmail.id).where(
            LoggedEmail.account_id == job.account_id, LoggedEmail.identity == content.identity
        )
    )
    assert existing is not None
    return existing, False


def _create_contacts(
    session: Session, job: Job, batch: Batch, create: list[tuple[str, str | None]]
) -> None:
    settings, d = job.settings, job.decision
    assert settings is not None and d is not None
    domains = (
        {addr: company_domain_for(addr) for addr, _ in create}
        if settings.associate_companies
        else {}
    )
    wanted = sorted({dom for dom in domains.values() if dom})
    company_ids: dict[str, int] = {}
    if wanted:
        insert_ignore(
            session,
            Company,
            [
                {"account_id": job.account_id, "domain": dom, "name": dom, "created_at": utcnow()}
                for dom in wanted
            ],
            ["account_id", "domain"],
        )
        company_ids = dict(
            session.execute(
                sa.select(Company.domain, Company.id).where(
                    Company.account_id == job.account_id, Company.domain.in_(wanted)
                )
            ).all()
        )
    # A new contact from bcc/forward gets the acting user as owner (§4).
    owner = d.acting_user_id if job.source in ("bcc", "forward") else None
    insert_ignore(
        session,
        Contact,
        [
            {
                "account_id": job.account_id,
                "email": addr,
                "name": name,
                "owner_id": owner,
                "company_id": company_ids.get(domains.get(addr) or ""),
                "created_at": utcnow(),
            }
            for addr, name in create
        ],
        ["account_id", "email"],
    )
    batch.contacts.setdefault(job.account_id, set()).update(addr for addr, _ in create)


def _associate(session: Session, job: Job, batch: Batch, email_id: int) -> None:
    d = job.decision
    assert d is not None and job.settings is not None
    to_log = [p for p in d.participants if p.action != c.ACT_SKIPPED]
    if not to_log:
        return
    create = [(p.address, p.name) for p in to_log if p.action == c.ACT_CREATED]
    if create:
        _create_contacts(session, job, batch, create)
    rows = session.execute(
        sa.select(Contact.id, Contact.company_id).where(
            Contact.account_id == job.account_id, Contact.email.in_([p.address for p in to_log])
        )
    ).all()
    insert_ignore(
        session,
        EmailContact,
        [{"email_id": email_id, "contact_id": cid} for cid, _ in rows],
        ["email_id", "contact_id"],
    )
    if job.settings.associate_companies:
        companies = sorted({co for _, co in rows if co})
        insert_ignore(
            session,
            EmailCompany,
            [{"email_id": email_id, "company_id": co} for co in companies],
            ["email_id", "company_id"],
        )


def record(job: Job, batch: Batch) -> None:
    session, d = batch.session, job.decision
    assert d is not None
    if session.scalar(sa.select(Decision.id).where(Decision.stored_message_id == job.stored_id)):
        job.outcome = "already_recorded"
        return
    outcome = d.outcome
    if d.outcome == c.LOGGED:
        email_id, created = _insert_email(session, job)
        if not created:
            outcome = c.DUPLICATE
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
        _associate(session, job, batch, email_id)
        if job.source == "team" and d.keep_in_conversation and job.inbox_id is not None:
            current = (
                None
                if created
                else session.scalar(
                    sa.select(LoggedEmail.conversation_id).where(LoggedEmail.id == email_id)
                )
            )
            if current is None:
                attach(session, job, email_id)
        job.email_id = email_id
    job.outcome = outcome
    session.execute(sa.insert(Decision).values(**decision_values(job)))
    # Raw content of a skipped personal-inbox message is not kept (§4).
    job.keep_raw = not (job.source == "personal" and outcome not in (c.LOGGED, c.DUPLICATE))

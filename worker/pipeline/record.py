"""Stage ``record``: a whole batch in a few multi-row statements — the emails, their
participants and sources, new companies and contacts, and the associations.

The unique (account, identity) key makes a second arrival of the same message a ``duplicate``
that only adds a source and associations. Team mail then joins its conversation (``converse``),
and ``finish`` writes the decisions.

Values from the message are cut to their columns here (§6: over-long values are truncated where
they are stored; the raw message keeps them whole), so they never fail a batch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.account_settings import AccountSettings
from shared.db.base import clip, table_of, utcnow
from shared.db.bulk import insert_each
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
from shared.db.upsert import insert_ignore, insert_ignore_returning
from shared.mail import Address
from shared.rules import codes as c
from shared.rules.logging_decision import LoggingDecision
from shared.services.crm import company_domain_for
from worker.pipeline.content import EmailContent
from worker.pipeline.job import Batch, Job

# Column limits (shared/db/models/emails.py).
ID_CHARS, ADDRESS_CHARS, NAME_CHARS = 998, 320, 500
CONTACT_NAME_CHARS, DOMAIN_CHARS = 200, 255  # shared/db/models/crm.py


def _addr(a: Address) -> dict[str, Any]:
    return {"address": clip(a.address, ADDRESS_CHARS), "name": clip(a.name, NAME_CHARS)}


def email_values(job: Job) -> dict[str, Any]:
    content, d = job.content, job.decision
    assert content is not None and d is not None
    return {
        "account_id": job.account_id,
        "identity": content.identity,
        "message_id": clip(content.message_id, ID_CHARS),
        "in_reply_to": clip(content.in_reply_to, ID_CHARS),
        "references": list(content.references),
        "subject": content.subject,
        "from_address": clip(content.from_.address, ADDRESS_CHARS) if content.from_ else None,
        "from_name": clip(content.from_.name, NAME_CHARS) if content.from_ else None,
        "to": [_addr(a) for a in content.to],
        "cc": [_addr(a) for a in content.cc],
        "date": content.date,
        "direction": d.direction,
        "kind": content.kind,
        "bounce_of_message_id": clip(content.bounce_of_message_id, ID_CHARS),
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
        ],
        "stored_message_id": job.stored_id,
        "received_at": job.received_at or utcnow(),
    }


def participant_rows(email_id: int, content: EmailContent) -> list[dict[str, Any]]:
    people = [("from", content.from_)] if content.from_ else []
    people += [("to", a) for a in content.to] + [("cc", a) for a in content.cc]
    return [{"email_id": email_id, "role": role, **_addr(a)} for role, a in people]


SortKey = tuple[datetime, datetime]  # an email's (coalesce(date, received_at), received_at)


def _emails(session: Session, logged: list[Job]) -> dict[int, SortKey]:
    """Insert new emails; set ``email_id`` and ``outcome`` (logged or duplicate) on each job.
    Returns each email's timeline sort key, which its contact and company links carry."""
    firsts: dict[tuple[int, str], Job] = {}
    for job in logged:
        firsts.setdefault((job.account_id, _content(job).identity), job)
    rows = [email_values(job) for job in firsts.values()]
    rows.sort(key=lambda r: (r["account_id"], r["identity"]))  # a stable lock order
    new = {
        (a, i): eid
        for eid, a, i in insert_ignore_returning(
            session,
            LoggedEmail,
            rows,
            ["account_id", "identity"],
            (LoggedEmail.id, LoggedEmail.account_id, LoggedEmail.identity),
        )
    }
    sort_keys: dict[int, SortKey] = {
        new[(r["account_id"], r["identity"])]: (r["date"] or r["received_at"], r["received_at"])
        for r in rows
        if (r["account_id"], r["identity"]) in new
    }
    missing = [k for k in firsts if k not in new]
    existing: dict[tuple[int, str], int] = {}
    if missing:
        for eid, a, i, date, received in session.execute(
            sa.select(
                LoggedEmail.id,
                LoggedEmail.account_id,
                LoggedEmail.identity,
                LoggedEmail.date,
                LoggedEmail.received_at,
            ).where(sa.tuple_(LoggedEmail.account_id, LoggedEmail.identity).in_(missing))
        ):
            existing[(a, i)] = eid
            sort_keys[eid] = (date or received, received)
    participants = []
    for job in logged:
        key = (job.account_id, _content(job).identity)
        created = key in new and firsts[key] is job
        job.email_id = new.get(key) or existing[key]
        job.outcome = c.LOGGED if created else c.DUPLICATE
        if created:
            participants += participant_rows(job.email_id, _content(job))
    if participants:
        # One small prepared statement, executed many (shared/db/bulk.py): cheaper than the
        # ORM's bulk INSERT for the several participants of every message.
        insert_each(session, table_of(EmailParticipant), participants)
    return sort_keys


def _contacts(
    session: Session, batch: Batch, logged: list[Job]
) -> dict[tuple[int, str], tuple[int, int | None]]:
    """Create the new contacts (and their companies); return (account, address) -> (id, company)."""
    creates: dict[tuple[int, str], dict[str, Any]] = {}
    wanted: set[tuple[int, str]] = set()
    for job in logged:
        d = _decision(job)
        for p in d.participants:
            if p.action == c.ACT_SKIPPED:
                continue
            wanted.add((job.account_id, p.address))
            if p.action == c.ACT_CREATED and (job.account_id, p.address) not in creates:
                associate = _settings(job).associate_companies
                domain = company_domain_for(p.address) if associate else None
                creates[(job.account_id, p.address)] = {
                    "account_id": job.account_id,
                    "email": p.address,
                    "name": clip(p.name, CONTACT_NAME_CHARS),
                    # A new contact from bcc/forward gets the acting user as owner (§4).
                    "owner_id": d.acting_user_id
                    if job.source in ("bcc", "forward", "sent")
                    else None,
                    "domain": clip(domain, DOMAIN_CHARS),
                }
    if creates:
        domains = sorted({(r["account_id"], r["domain"]) for r in creates.values() if r["domain"]})
        company_ids: dict[tuple[int, str], int] = {}
        if domains:
            insert_ignore(
                session,
                Company,
                [
                    {
                        "account_id": a,
                        "domain": dom,
                        "name": clip(dom, CONTACT_NAME_CHARS),
                        "created_at": utcnow(),
                    }
                    for a, dom in domains
                ],
                ["account_id", "domain"],
            )
            company_ids = {
                (a, dom): cid
                for cid, a, dom in session.execute(
                    sa.select(Company.id, Company.account_id, Company.domain).where(
                        sa.tuple_(Company.account_id, Company.domain).in_(domains)
                    )
                )
            }
        insert_ignore(
            session,
            Contact,
            [
                {
                    "account_id": r["account_id"],
                    "email": r["email"],
                    "name": r["name"],
                    "owner_id": r["owner_id"],
                    "created_at": utcnow(),
                    "company_id": company_ids.get((r["account_id"], r["domain"] or "")),
                }
                for _, r in sorted(creates.items())
            ],
            ["account_id", "email"],
        )
        for account_id, address in creates:
            batch.contacts.setdefault(account_id, set()).add(address)
    if not wanted:
        return {}
    return {
        (a, e): (cid, co)
        for cid, a, e, co in session.execute(
            sa.select(Contact.id, Contact.account_id, Contact.email, Contact.company_id).where(
                sa.tuple_(Contact.account_id, Contact.email).in_(sorted(wanted))
            )
        )
    }


def record_batch(batch: Batch) -> None:
    session = batch.db()
    jobs = batch.live
    seen = set(
        session.scalars(
            sa.select(Decision.stored_message_id).where(
                Decision.stored_message_id.in_([j.stored_id for j in jobs])
            )
        )
    )
    todo = []
    for job in jobs:
        if job.stored_id in seen:  # a redelivered task: recorded already
            job.outcome = "already_recorded"
        else:
            todo.append(job)
    logged = [j for j in todo if _decision(j).outcome == c.LOGGED]
    for job in todo:
        if _decision(job).outcome != c.LOGGED:
            job.outcome = _decision(job).outcome
    if logged:
        sort_keys = _emails(session, logged)
        insert_ignore(
            session,
            EmailSource,
            [
                {
                    "email_id": j.email_id,
                    "source": j.source,
                    "stored_message_id": j.stored_id,
                    "connection_id": j.connection_id,
                    "created_at": utcnow(),
                }
                for j in logged
            ],
            ["email_id", "stored_message_id"],
        )
        contacts = _contacts(session, batch, logged)
        links, companies = set(), set()
        for job in logged:
            for p in _decision(job).participants:
                found = contacts.get((job.account_id, p.address))
                if p.action == c.ACT_SKIPPED or found is None:
                    continue
                links.add((job.email_id, found[0]))
                job.contact_ids.append(found[0])
                if found[1] and _settings(job).associate_companies:
                    companies.add((job.email_id, found[1]))
        insert_ignore(
            session,
            EmailContact,
            [
                {"email_id": e, "contact_id": k, **_sorted_by(sort_keys, e)}
                for e, k in sorted(links)
            ],
            ["email_id", "contact_id"],
        )
        insert_ignore(
            session,
            EmailCompany,
            [
                {"email_id": e, "company_id": k, **_sorted_by(sort_keys, e)}
                for e, k in sorted(companies)
            ],
            ["email_id", "company_id"],
        )
    for job in todo:
        # Raw content of a skipped personal-inbox message is not kept (§4).
        job.keep_raw = not (job.source == "personal" and job.outcome not in (c.LOGGED, c.DUPLICATE))


def _sorted_by(sort_keys: dict[int, SortKey], email_id: int | None) -> dict[str, datetime]:
    assert email_id is not None, "a linked email was recorded"
    sort_at, received_at = sort_keys[email_id]
    return {"email_sort_at": sort_at, "email_received_at": received_at}


def _decision(job: Job) -> LoggingDecision:
    assert job.decision is not None, "record runs after decide"
    return job.decision


def _content(job: Job) -> EmailContent:
    # Only an unreadable forward has no content, and its decision is never "logged".
    assert job.content is not None, "a logged message has content"
    return job.content


def _settings(job: Job) -> AccountSettings:
    assert job.settings is not None, "record runs after gather"
    return job.settings

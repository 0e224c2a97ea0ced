"""JSON shapes of §7 for the objects the API returns."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.db.models import (
    Account,
    Company,
    Contact,
    Conversation,
    Decision,
    LoggedEmail,
    TeamInbox,
    User,
)
from shared.services.accounts import intake_address, settings_of
from shared.services.inboxes import member_ids
from shared.timefmt import iso


def account_view(account: Account, logging_domain: str) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "bcc_address": intake_address(account.bcc_token, logging_domain),
        "forward_address": intake_address(account.forward_token, logging_domain),
        "settings": settings_of(account).model_dump(),
    }


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "active": user.active,
    }


def defaults_view(user: User) -> dict[str, Any]:
    return {"log": user.default_log, "track": user.default_track, "never_log": user.never_log}


def inbox_view(
    session: Session, inbox: TeamInbox, logging_domain: str, members: list[int] | None = None
) -> dict[str, Any]:
    """``members``: the inbox's member ids when the caller read them already (a list page)."""
    return {
        "id": inbox.id,
        "name": inbox.name,
        "sender_name": inbox.sender_name,
        "member_ids": member_ids(session=session, inbox_id=inbox.id)
        if members is None
        else members,
        "forward_address": intake_address(inbox.forward_token, logging_domain),
    }


def contact_view(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "email": contact.email,
        "name": contact.name,
        "owner_id": contact.owner_id,
        "company_id": contact.company_id,
        "tracking_opt_out": contact.tracking_opt_out,
    }


def company_view(company: Company) -> dict[str, Any]:
    return {"id": company.id, "domain": company.domain, "name": company.name}


def _from(email: LoggedEmail) -> dict[str, Any] | None:
    if not email.from_address:
        return None
    return {"address": email.from_address, "name": email.from_name}


def email_summary(email: LoggedEmail) -> dict[str, Any]:
    return {
        "id": email.id,
        "subject": email.subject,
        "from": _from(email),
        "date": iso(email.date),
        "direction": email.direction,
        "kind": email.kind,
        "snippet": email.snippet,
    }


def email_view(email: LoggedEmail, links: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "id": email.id,
        "message_id": email.message_id,
        "in_reply_to": email.in_reply_to,
        "references": email.references or [],
        "subject": email.subject,
        "from": _from(email),
        "to": email.to,
        "cc": email.cc,
        "date": iso(email.date),
        "direction": email.direction,
        "kind": email.kind,
        "bounce_of_message_id": email.bounce_of_message_id,
        "forwarded_by": email.forwarded_by_user_id,
        "visibility": email.visibility,
        "sources": links["sources"],
        "contact_ids": links["contact_ids"],
        "company_ids": links["company_ids"],
        "conversation_id": email.conversation_id,
        "logged_by_user_id": email.logged_by_user_id,
        "text": email.text,
        "html": email.html,
        "attachments": [
            {
                "filename": a.get("filename"),
                "content_type": a.get("content_type"),
                "size": a.get("size"),
            }
            for a in email.attachments or []
        ],
    }


def decision_view(d: Decision) -> dict[str, Any]:
    return {
        "id": d.id,
        "received_at": iso(d.received_at),
        "source": d.source,
        "message_id": d.message_id,
        "subject": d.subject,
        "outcome": d.outcome,
        "codes": d.codes,
        "email_id": d.email_id,
        "participants": d.participants,
        # Team mail: how it was threaded, and for a new conversation which routing rule fired
        # and why each earlier one did not (null otherwise).
        "thread": d.thread,
        "routing": d.routing,
    }


def conversation_view(c: Conversation, message_count: int | None = None) -> dict[str, Any]:
    """``message_count``: what this viewer sees, when private emails hide some from them."""
    return {
        "id": c.id,
        "inbox_id": c.inbox_id,
        "subject": c.subject,
        "status": c.status,
        "assignee_id": c.assignee_id,
        "tags": c.tags or [],
        "contact_ids": c.contact_ids or [],
        "message_count": c.message_count if message_count is None else message_count,
        "last_message_at": iso(c.last_message_at),
    }

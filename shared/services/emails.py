"""Reading logged emails and decisions with the visibility rules of §3 (C4, C5) and §4."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from shared.db.models import (
    Conversation,
    ConversationEmail,
    Decision,
    EmailCompany,
    EmailContact,
    EmailSource,
    InboxMember,
    LoggedEmail,
    StoredMessage,
)
from shared.errors import Forbidden, Invalid, NotFound
from shared.principal import Principal

VISIBILITIES = ("account", "private")


def visible_emails(principal: Principal) -> sa.ColumnElement[bool]:
    """Who sees a logged email: admins; the user who logged it; otherwise an ``account`` email
    on a contact timeline, or in a conversation of an inbox the user belongs to."""
    in_account = LoggedEmail.account_id == principal.account_id
    if principal.is_admin:
        return in_account
    mine = LoggedEmail.logged_by_user_id == principal.user_id
    # Aliases and explicit correlation: the outer query may join these same tables.
    link, conv, member = aliased(EmailContact), aliased(Conversation), aliased(InboxMember)
    shown = aliased(ConversationEmail)
    on_timeline = (
        sa.select(1)
        .select_from(link)
        .where(link.email_id == LoggedEmail.id)
        .correlate(LoggedEmail)
        .exists()
    )
    in_my_inbox = (
        sa.select(1)
        .select_from(shown)
        .join(conv, conv.id == shown.conversation_id)
        .join(member, member.inbox_id == conv.inbox_id)
        .where(shown.email_id == LoggedEmail.id, member.user_id == principal.user_id)
        .correlate(LoggedEmail)
        .exists()
    )
    shared_ok = sa.and_(LoggedEmail.visibility == "account", sa.or_(on_timeline, in_my_inbox))
    return sa.and_(in_account, sa.or_(mine, shared_ok))


def newest_first() -> tuple[Any, ...]:
    return (
        sa.func.coalesce(LoggedEmail.date, LoggedEmail.received_at).desc(),
        LoggedEmail.received_at.desc(),
        LoggedEmail.id.desc(),
    )


def emails_of_contact(
    *, session: Session, principal: Principal, contact_id: int, limit: int, offset: int
) -> list[LoggedEmail]:
    q = (
        sa.select(LoggedEmail)
        .join(EmailContact, EmailContact.email_id == LoggedEmail.id)
        .where(EmailContact.contact_id == contact_id, visible_emails(principal))
        .order_by(*newest_first())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(q))


def emails_of_company(
    *, session: Session, principal: Principal, company_id: int, limit: int, offset: int
) -> list[LoggedEmail]:
    q = (
        sa.select(LoggedEmail)
        .join(EmailCompany, EmailCompany.email_id == LoggedEmail.id)
        .where(EmailCompany.company_id == company_id, visible_emails(principal))
        .order_by(*newest_first())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(q))


def get_email(*, session: Session, principal: Principal, email_id: int) -> LoggedEmail:
    email = session.scalar(
        sa.select(LoggedEmail).where(LoggedEmail.id == email_id, visible_emails(principal))
    )
    if email is None:
        raise NotFound("email not found")
    return email


def set_visibility(
    *, session: Session, principal: Principal, email_id: int, visibility: str
) -> LoggedEmail:
    email = get_email(session=session, principal=principal, email_id=email_id)
    if not (principal.is_admin or email.logged_by_user_id == principal.user_id):
        raise Forbidden("only the user who logged it or an admin may change this")
    if visibility not in VISIBILITIES:
        raise Invalid("visibility must be account or private", details={"field": "visibility"})
    email.visibility = visibility
    session.flush()
    return email


def email_links(session: Session, email_id: int) -> dict[str, list[Any]]:
    return {
        "sources": sorted(
            set(
                session.scalars(
                    sa.select(EmailSource.source).where(EmailSource.email_id == email_id)
                )
            )
        ),
        "contact_ids": sorted(
            session.scalars(
                sa.select(EmailContact.contact_id).where(EmailContact.email_id == email_id)
            )
        ),
        "company_ids": sorted(
            session.scalars(
                sa.select(EmailCompany.company_id).where(EmailCompany.email_id == email_id)
            )
        ),
    }


def list_decisions(
    *,
    session: Session,
    principal: Principal,
    source: str | None,
    outcome: str | None,
    limit: int,
    offset: int,
) -> list[Decision]:
    """Private (personal-inbox) decisions are seen by their owner only (C4)."""
    q = sa.select(Decision).where(Decision.account_id == principal.account_id)
    private = Decision.private_to_user_id.is_not(None)
    if principal.is_admin:
        q = q.where(sa.or_(~private, Decision.private_to_user_id == principal.user_id))
    else:
        member_inbox = sa.exists().where(
            StoredMessage.id == Decision.stored_message_id,
            InboxMember.inbox_id == StoredMessage.inbox_id,
            InboxMember.user_id == principal.user_id,
        )
        q = q.where(
            sa.or_(
                Decision.private_to_user_id == principal.user_id,
                sa.and_(
                    ~private, sa.or_(Decision.acting_user_id == principal.user_id, member_inbox)
                ),
            )
        )
    if source:
        q = q.where(Decision.source == source)
    if outcome:
        q = q.where(Decision.outcome == outcome)
    return list(session.scalars(q.order_by(Decision.id.desc()).limit(limit).offset(offset)))

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


def timeline_key() -> tuple[Any, Any, Any]:
    """The order of every list of messages (§7): by date, falling back to received_at; equal
    dates by received_at, then id. ``ix_logged_emails_timeline`` holds it per account."""
    return (
        sa.func.coalesce(LoggedEmail.date, LoggedEmail.received_at),
        LoggedEmail.received_at,
        LoggedEmail.id,
    )


def newest_first() -> tuple[Any, ...]:
    return tuple(column.desc() for column in timeline_key())


class UnknownCursor(Invalid):
    code = "unknown_before_id"


def _timeline_page(
    session: Session, listed: Any, *, limit: int, offset: int, before_id: int | None
) -> list[LoggedEmail]:
    """A page of ``listed`` (a SELECT of LoggedEmail) newest first.

    Keyset: ``before_id`` names the last email of the previous page; its sort key is looked
    up in this same list (so an email the caller cannot see, or of another timeline, names
    nothing: 422) and the page continues with a row-value comparison on that key — a range of
    the timeline index, whatever the depth.
    """
    key = timeline_key()
    q = listed
    if before_id is not None:
        cursor = session.execute(
            listed.with_only_columns(*key).where(LoggedEmail.id == before_id)
        ).first()
        if cursor is None:
            raise UnknownCursor(
                "before_id names no email of this list", details={"before_id": before_id}
            )
        bound = [
            sa.literal(value, type_=column.type) for value, column in zip(cursor, key, strict=True)
        ]
        q = q.where(sa.tuple_(*key) < sa.tuple_(*bound))
    return list(session.scalars(q.order_by(*newest_first()).limit(limit).offset(offset)))


def emails_of_contact(
    *,
    session: Session,
    principal: Principal,
    contact_id: int,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[LoggedEmail]:
    listed = (
        sa.select(LoggedEmail)
        .join(EmailContact, EmailContact.email_id == LoggedEmail.id)
        .where(EmailContact.contact_id == contact_id, visible_emails(principal))
    )
    return _timeline_page(session, listed, limit=limit, offset=offset, before_id=before_id)


def emails_of_company(
    *,
    session: Session,
    principal: Principal,
    company_id: int,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[LoggedEmail]:
    listed = (
        sa.select(LoggedEmail)
        .join(EmailCompany, EmailCompany.email_id == LoggedEmail.id)
        .where(EmailCompany.company_id == company_id, visible_emails(principal))
    )
    return _timeline_page(session, listed, limit=limit, offset=offset, before_id=before_id)


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
    before_id: int | None = None,
) -> list[Decision]:
    """Newest first; ``before_id``: those older than that decision. Private (personal-inbox)
    decisions are seen by their owner only (C4).

    What a user sees is two disjoint ranges of ``ix_decisions_account_private_id``: the
    decisions private to them, and the account's non-private ones (for a member, only those
    they acted on or of their inboxes). Each range is read newest first and cut at the page's
    end, so a page costs the same at any depth; the two short lists are then merged.
    """
    window = offset + limit

    def newest(*conditions: Any) -> Any:
        q = sa.select(Decision.id).where(Decision.account_id == principal.account_id, *conditions)
        if source:
            q = q.where(Decision.source == source)
        if outcome:
            q = q.where(Decision.outcome == outcome)
        if before_id is not None:
            q = q.where(Decision.id < before_id)
        return sa.select(q.order_by(Decision.id.desc()).limit(window).subquery().c.id)

    mine = newest(Decision.private_to_user_id == principal.user_id)
    not_private = Decision.private_to_user_id.is_(None)
    if principal.is_admin:
        shared = newest(not_private)
    else:
        # The message's inbox by primary key, per row, against the member's few inboxes: an
        # EXISTS here lets the planner hash every stored message of those inboxes instead.
        inbox_of_message = (
            sa.select(StoredMessage.inbox_id)
            .where(StoredMessage.id == Decision.stored_message_id)
            .scalar_subquery()
        )
        my_inboxes = sa.select(InboxMember.inbox_id).where(InboxMember.user_id == principal.user_id)
        shared = newest(
            not_private,
            sa.or_(Decision.acting_user_id == principal.user_id, inbox_of_message.in_(my_inboxes)),
        )
    page = (
        sa.union_all(mine, shared)
        .subquery()
        .select()
        .order_by(sa.literal_column("id").desc())
        .limit(limit)
        .offset(offset)
    )
    # The page's few ids first, then their rows by primary key: two short reads the planner
    # cannot turn into a scan of the table.
    ids = list(session.scalars(page))
    if not ids:
        return []
    return list(
        session.scalars(
            sa.select(Decision).where(Decision.id.in_(ids)).order_by(Decision.id.desc())
        )
    )

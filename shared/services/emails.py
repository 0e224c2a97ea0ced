"""Reading logged emails and decisions with the visibility rules of §3 (C4, C5) and §4."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased, load_only

from shared.db.models import (
    Conversation,
    ConversationEmail,
    Decision,
    EmailCompany,
    EmailContact,
    EmailSource,
    InboxMember,
    LoggedEmail,
)
from shared.errors import Forbidden, Invalid, NotFound
from shared.principal import Principal

VISIBILITIES = ("account", "private")


def visible_emails(principal: Principal, *, shown: bool = False) -> sa.ColumnElement[bool]:
    """Who sees a logged email: admins; the user who logged it; otherwise an ``account`` email
    on a contact timeline, or in a conversation of an inbox the user belongs to.

    ``shown``: the query reads emails from one of those places — a contact's or company's
    timeline (a company's emails are its contacts'), or a conversation of an inbox the caller
    was checked to belong to (C5) — so no subquery is needed to say so."""
    in_account = LoggedEmail.account_id == principal.account_id
    if principal.is_admin:
        return in_account
    mine = LoggedEmail.logged_by_user_id == principal.user_id
    shared = LoggedEmail.visibility == "account"
    if shown:
        return sa.and_(in_account, sa.or_(mine, shared))
    # Aliases and explicit correlation: the outer query may join these same tables.
    link, conv, member = aliased(EmailContact), aliased(Conversation), aliased(InboxMember)
    in_conv = aliased(ConversationEmail)
    on_a_timeline = (
        sa.select(1)
        .select_from(link)
        .where(link.email_id == LoggedEmail.id)
        .correlate(LoggedEmail)
        .exists()
    )
    in_my_inbox = (
        sa.select(1)
        .select_from(in_conv)
        .join(conv, conv.id == in_conv.conversation_id)
        .join(member, member.inbox_id == conv.inbox_id)
        .where(in_conv.email_id == LoggedEmail.id, member.user_id == principal.user_id)
        .correlate(LoggedEmail)
        .exists()
    )
    shared_ok = sa.and_(shared, sa.or_(on_a_timeline, in_my_inbox))
    return sa.and_(in_account, sa.or_(mine, shared_ok))


# What an email summary (§7) is made of.
SUMMARY_COLUMNS = (
    LoggedEmail.id,
    LoggedEmail.subject,
    LoggedEmail.from_address,
    LoggedEmail.from_name,
    LoggedEmail.date,
    LoggedEmail.direction,
    LoggedEmail.kind,
    LoggedEmail.snippet,
)


class UnknownCursor(Invalid):
    code = "unknown_before_id"


Link = type[EmailContact] | type[EmailCompany]


def _timeline_page(
    session: Session,
    principal: Principal,
    link: Link,
    owner: sa.ColumnElement[bool],
    *,
    limit: int,
    offset: int,
    before_id: int | None,
) -> list[LoggedEmail]:
    """A page of a contact's or company's timeline (``owner`` picks its links), newest first
    in the §7 order: by date, falling back to received_at; equal dates by received_at, then id.

    Each link carries its email's sort key, so the page is a range of the link's
    ``…_timeline`` index, joined to its emails by primary key. Keyset: ``before_id`` names the
    last email of the previous page; its key is looked up in this same list (an email the
    caller cannot see, or of another timeline, names nothing: 422) and the page continues
    after it with a row-value comparison — the same range scan at any depth.
    """
    key = (link.email_sort_at, link.email_received_at, link.email_id)
    listed = (
        sa.select(LoggedEmail)
        .join(link, link.email_id == LoggedEmail.id)
        .where(owner, visible_emails(principal, shown=True))
        # A timeline shows summaries: the columns of one, not the recipients and attachments
        # (JSON decoded per row) nor the bodies. Others load if ever read.
        .options(load_only(*SUMMARY_COLUMNS))
    )
    q = listed
    if before_id is not None:
        cursor = session.execute(
            listed.with_only_columns(*key).where(link.email_id == before_id)
        ).first()
        if cursor is None:
            raise UnknownCursor(
                "before_id names no email of this list", details={"before_id": before_id}
            )
        bound = [
            sa.literal(value, type_=column.type) for value, column in zip(cursor, key, strict=True)
        ]
        q = q.where(sa.tuple_(*key) < sa.tuple_(*bound))
    newest_first = [column.desc() for column in key]
    return list(session.scalars(q.order_by(*newest_first).limit(limit).offset(offset)))


def emails_of_contact(
    *,
    session: Session,
    principal: Principal,
    contact_id: int,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[LoggedEmail]:
    return _timeline_page(
        session,
        principal,
        EmailContact,
        EmailContact.contact_id == contact_id,
        limit=limit,
        offset=offset,
        before_id=before_id,
    )


def emails_of_company(
    *,
    session: Session,
    principal: Principal,
    company_id: int,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[LoggedEmail]:
    return _timeline_page(
        session,
        principal,
        EmailCompany,
        EmailCompany.company_id == company_id,
        limit=limit,
        offset=offset,
        before_id=before_id,
    )


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

    What a user sees is a few ranges, each read newest first from its own index and cut at
    the page's end, so a page costs the same at any depth whatever the user sees: the
    decisions private to them, and — for an admin — the account's non-private ones
    (``ix_decisions_account_private_{id,outcome_id,source_id}``: a filter narrows the range,
    not the rows read); for a member, the non-private ones they acted on
    (``ix_decisions_acting_private_id``) or of each of their inboxes
    (``ix_decisions_inbox_private_id``), where a filter is applied to the rows read. The short
    lists are then merged (a member's may overlap: UNION).
    """
    window = offset + limit

    def newest(*conditions: Any) -> Any:
        q = sa.select(Decision.id).where(*conditions)
        if source:
            q = q.where(Decision.source == source)
        if outcome:
            q = q.where(Decision.outcome == outcome)
        if before_id is not None:
            q = q.where(Decision.id < before_id)
        # Within a range private_to_user_id is one value (the user, or NULL), so this is id
        # order; naming it makes the range's own index the only one that gives the order (the
        # primary key alone would be walked until the range's rows turn up: a scan).
        order = (Decision.private_to_user_id.desc(), Decision.id.desc())
        return sa.select(q.order_by(*order).limit(window).subquery().c.id)

    in_account = Decision.account_id == principal.account_id
    not_private = Decision.private_to_user_id.is_(None)
    ranges = [newest(in_account, Decision.private_to_user_id == principal.user_id)]
    if principal.is_admin:
        ranges.append(newest(in_account, not_private))
    else:
        # No account condition here: the user and their inboxes are the account's, and with
        # one the planner may walk the account's range hoping to meet this user's rows soon —
        # most of a user's own acts are private (personal mail), so it would read them all.
        ranges.append(newest(not_private, Decision.acting_user_id == principal.user_id))
        inboxes = session.scalars(
            sa.select(InboxMember.inbox_id).where(InboxMember.user_id == principal.user_id)
        )
        ranges += [newest(not_private, Decision.inbox_id == inbox_id) for inbox_id in inboxes]
    merged = sa.union(*ranges) if len(ranges) > 2 else sa.union_all(*ranges)
    page = (
        merged.subquery()
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

"""Team-inbox conversations: visible to the inbox's members and to admins (C5)."""

from __future__ import annotations

from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session, load_only

from shared.db.models import Conversation, ConversationEmail, LoggedEmail, User
from shared.errors import Invalid, NotFound
from shared.principal import Principal
from shared.services.emails import SUMMARY_COLUMNS, visible_emails
from shared.services.inboxes import get_inbox, member_ids

STATUSES = ("open", "closed")


def list_conversations(
    *,
    session: Session,
    principal: Principal,
    inbox_id: int,
    status: str | None,
    assignee_id: int | None,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[Conversation]:
    """Latest message first (conversations without one last), then newest id first.

    Keyset: ``before_id`` names the last conversation of the previous page (422 unless it is
    in this list); the page continues after its (last_message_at, id). Each filter has its
    index (``ix_conversations_inbox_{last,status_last,assignee_last}``), read in order: the
    dated conversations by a row-value range, then — only when the page is not yet full — the
    undated ones, so no query sorts the inbox.
    """
    get_inbox(session=session, principal=principal, inbox_id=inbox_id)
    listed = sa.select(Conversation).where(Conversation.inbox_id == inbox_id)
    if status:
        listed = listed.where(Conversation.status == status)
    if assignee_id is not None:
        listed = listed.where(Conversation.assignee_id == assignee_id)
    last, cid = Conversation.last_message_at, Conversation.id
    cursor = None
    if before_id is not None:
        cursor = session.execute(
            listed.with_only_columns(last, cid).where(cid == before_id)
        ).first()
        if cursor is None:
            raise Invalid(
                "before_id names no conversation of this list",
                code="unknown_before_id",
                details={"before_id": before_id},
            )
    found: list[Conversation] = []
    undated_offset = offset  # how many undated ones the offset skips
    if cursor is None or cursor[0] is not None:
        dated = listed.where(last.is_not(None))
        if cursor is not None:
            bound = (sa.literal(cursor[0], type_=last.type), sa.literal(cursor[1]))
            dated = dated.where(sa.tuple_(last, cid) < sa.tuple_(*bound))
        q = dated.order_by(last.desc(), cid.desc()).limit(limit).offset(offset)
        found = list(session.scalars(q))
        if found or not offset:
            undated_offset = 0  # the page begins among the dated ones
        elif len(found) < limit:  # the offset runs past the dated ones: by how many?
            n_dated = session.scalar(sa.select(sa.func.count()).select_from(dated.subquery()))
            undated_offset = max(0, offset - (n_dated or 0))
    if len(found) < limit:
        undated = listed.where(last.is_(None))
        if cursor is not None and cursor[0] is None:
            undated = undated.where(cid < cursor[1])
        q = undated.order_by(cid.desc()).limit(limit - len(found)).offset(undated_offset)
        found += session.scalars(q)
    return found


def get_conversation(
    *, session: Session, principal: Principal, conversation_id: int
) -> Conversation:
    conv = session.get(Conversation, conversation_id)
    if conv is None or conv.account_id != principal.account_id:
        raise NotFound("conversation not found")
    get_inbox(session=session, principal=principal, inbox_id=conv.inbox_id)  # 404 unless C5
    return conv


def messages_of(
    *, session: Session, principal: Principal, conversation_id: int
) -> list[LoggedEmail]:
    """The messages this user may see (a ``private`` email only for its logger and admins).
    The caller checked that the user sees the conversation (:func:`get_conversation`)."""
    q = (
        sa.select(LoggedEmail)
        .options(load_only(*SUMMARY_COLUMNS))  # shown as summaries
        .join(ConversationEmail, ConversationEmail.email_id == LoggedEmail.id)
        .where(
            ConversationEmail.conversation_id == conversation_id,
            visible_emails(principal, shown=True),
        )
        .order_by(
            sa.func.coalesce(LoggedEmail.date, LoggedEmail.received_at),
            LoggedEmail.received_at,
            LoggedEmail.id,
        )
    )
    return list(session.scalars(q))


def visible_counts(
    *, session: Session, principal: Principal, conversation_ids: list[int]
) -> dict[int, int] | None:
    """Messages per conversation as this user sees them; None when they see every message
    (admins), so the stored count holds. The caller checked that the user sees these
    conversations (their inbox's: C5)."""
    if principal.is_admin or not conversation_ids:
        return None
    rows = session.execute(
        sa.select(ConversationEmail.conversation_id, sa.func.count())
        .join(LoggedEmail, LoggedEmail.id == ConversationEmail.email_id)
        .where(
            ConversationEmail.conversation_id.in_(conversation_ids),
            visible_emails(principal, shown=True),
        )
        .group_by(ConversationEmail.conversation_id)
    )
    return {cid: n for cid, n in rows}


class ConversationChanges(TypedDict, total=False):
    """The fields a PATCH of a conversation names (the absent ones stay as they are)."""

    status: str | None
    assignee_id: int | None


def update_conversation(
    *, session: Session, principal: Principal, conversation_id: int, fields: ConversationChanges
) -> Conversation:
    conv = get_conversation(session=session, principal=principal, conversation_id=conversation_id)
    if "status" in fields:
        if fields["status"] not in STATUSES:
            raise Invalid("status must be open or closed", details={"field": "status"})
        conv.status = str(fields["status"])
    if "assignee_id" in fields:
        assignee = fields["assignee_id"]
        if assignee is not None:
            user = session.get(User, assignee)
            if user is None or user.account_id != principal.account_id or not user.active:
                raise Invalid(
                    "unknown or inactive user",
                    code="unknown_user",
                    details={"assignee_id": assignee},
                )
            if user.role != "admin" and user.id not in member_ids(
                session=session, inbox_id=conv.inbox_id
            ):
                raise Invalid("the assignee is not a member of this inbox", code="not_a_member")
        conv.assignee_id = assignee
    session.flush()
    return conv

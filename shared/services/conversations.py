"""Team-inbox conversations: visible to the inbox's members and to admins (C5)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Conversation, ConversationEmail, LoggedEmail, User
from shared.errors import Invalid, NotFound
from shared.principal import Principal
from shared.services.emails import visible_emails
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
) -> list[Conversation]:
    get_inbox(session=session, principal=principal, inbox_id=inbox_id)
    q = sa.select(Conversation).where(Conversation.inbox_id == inbox_id)
    if status:
        q = q.where(Conversation.status == status)
    if assignee_id is not None:
        q = q.where(Conversation.assignee_id == assignee_id)
    q = q.order_by(Conversation.last_message_at.desc().nulls_last(), Conversation.id.desc())
    return list(session.scalars(q.limit(limit).offset(offset)))


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
    """The messages this user may see (a ``private`` email only for its logger and admins)."""
    q = (
        sa.select(LoggedEmail)
        .join(ConversationEmail, ConversationEmail.email_id == LoggedEmail.id)
        .where(ConversationEmail.conversation_id == conversation_id, visible_emails(principal))
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
    (admins), so the stored count holds."""
    if principal.is_admin or not conversation_ids:
        return None
    rows = session.execute(
        sa.select(ConversationEmail.conversation_id, sa.func.count())
        .join(LoggedEmail, LoggedEmail.id == ConversationEmail.email_id)
        .where(ConversationEmail.conversation_id.in_(conversation_ids), visible_emails(principal))
        .group_by(ConversationEmail.conversation_id)
    )
    return {cid: n for cid, n in rows}


def update_conversation(
    *, session: Session, principal: Principal, conversation_id: int, fields: dict[str, object]
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
        conv.assignee_id = assignee  # type: ignore[assignment]
    session.flush()
    return conv

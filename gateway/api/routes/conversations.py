"""Team-inbox conversations and the routing-rules dry run."""

from __future__ import annotations

from typing import Any, Literal, cast

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import ContextDep, DbId, ListPageDep, SessionDep, UserDep
from gateway.api.limits import BODY_TOO_LARGE
from gateway.api.views import conversation_view, email_summary
from shared.errors import DomainError
from shared.mail import parse_message
from shared.rules.routing import route
from shared.services import conversations as svc
from shared.services.inboxes import get_inbox, get_rules
from shared.services.routing import routing_facts

router = APIRouter(tags=["conversations"])


class MessageTooLarge(DomainError):
    status = 413
    code = BODY_TOO_LARGE


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "closed"] | None = None
    assignee_id: DbId | None = None


class RawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Bounded by the route's body limit and, once decoded, by INBOXLOG_MAX_MESSAGE_BYTES.
    raw: str = Field(min_length=1)


@router.get("/v1/inboxes/{inbox_id}/conversations")
def list_conversations(
    inbox_id: DbId,
    session: SessionDep,
    p: UserDep,
    pg: ListPageDep,
    status: Literal["open", "closed"] | None = None,
    assignee_id: DbId | None = None,
) -> dict[str, Any]:
    """Conversations, latest message first. ``before_id``: the last of the previous page."""
    found = svc.list_conversations(
        session=session,
        principal=p,
        inbox_id=inbox_id,
        status=status,
        assignee_id=assignee_id,
        limit=pg.limit,
        offset=pg.offset,
        before_id=pg.before_id,
    )
    counts = svc.visible_counts(
        session=session, principal=p, conversation_ids=[c.id for c in found]
    )
    return {
        "items": [
            conversation_view(c, None if counts is None else counts.get(c.id, 0)) for c in found
        ]
    }


@router.get("/v1/conversations/{conversation_id}")
def get_conversation(conversation_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    conv = svc.get_conversation(session=session, principal=p, conversation_id=conversation_id)
    messages = svc.messages_of(session=session, principal=p, conversation_id=conv.id)
    return {
        **conversation_view(conv, None if p.is_admin else len(messages)),
        "messages": [email_summary(m) for m in messages],
    }


@router.patch("/v1/conversations/{conversation_id}")
def patch_conversation(
    conversation_id: DbId, body: ConversationPatch, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    # ConversationPatch's fields are ConversationChanges' keys, with the same types.
    fields = cast(svc.ConversationChanges, {k: getattr(body, k) for k in body.model_fields_set})
    if "status" in fields and fields["status"] is None:
        fields.pop("status")
    conv = svc.update_conversation(
        session=session, principal=p, conversation_id=conversation_id, fields=fields
    )
    counts = svc.visible_counts(session=session, principal=p, conversation_ids=[conv.id])
    return conversation_view(conv, None if counts is None else counts.get(conv.id, 0))


@router.post("/v1/inboxes/{inbox_id}/rules/test")
def test_rules(
    inbox_id: DbId, body: RawIn, ctx: ContextDep, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    """Which rule would fire on this raw message, and why each earlier one did not.

    The message is held to ``INBOXLOG_MAX_MESSAGE_BYTES``, like mail taken in (413)."""
    inbox = get_inbox(session=session, principal=p, inbox_id=inbox_id)
    raw = body.raw.encode("utf-8", "surrogateescape")
    if len(raw) > ctx.settings.max_message_bytes:
        raise MessageTooLarge(
            f"the message is larger than {ctx.settings.max_message_bytes} bytes",
            details={"max_message_bytes": ctx.settings.max_message_bytes},
        )
    pm = parse_message(raw)
    facts = routing_facts(session=session, account_id=inbox.account_id, pm=pm)
    result = route(get_rules(session=session, inbox_id=inbox.id), facts)
    return {
        "matched": result.matched,
        "rule_name": result.rule_name,
        "action": result.action,
        "tags": list(result.tags),
        "trace": list(result.trace),
    }

"""Team-inbox conversations and the routing-rules dry run."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.http.deps import DbId, PageDep, SessionDep, UserDep
from gateway.http.views import conversation_view, email_summary
from shared.mail import parse_message
from shared.rules.routing import route
from shared.services import conversations as svc
from shared.services.inboxes import get_inbox, get_rules
from shared.services.routing import routing_facts

router = APIRouter(tags=["conversations"])


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "closed"] | None = None
    assignee_id: DbId | None = None


class RawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    raw: str = Field(min_length=1, max_length=5_000_000)


@router.get("/v1/inboxes/{inbox_id}/conversations")
def list_conversations(
    inbox_id: DbId,
    session: SessionDep,
    p: UserDep,
    pg: PageDep,
    status: Literal["open", "closed"] | None = None,
    assignee_id: DbId | None = None,
) -> dict:
    found = svc.list_conversations(
        session=session,
        principal=p,
        inbox_id=inbox_id,
        status=status,
        assignee_id=assignee_id,
        limit=pg.limit,
        offset=pg.offset,
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
def get_conversation(conversation_id: DbId, session: SessionDep, p: UserDep) -> dict:
    conv = svc.get_conversation(session=session, principal=p, conversation_id=conversation_id)
    messages = svc.messages_of(session=session, principal=p, conversation_id=conv.id)
    return {
        **conversation_view(conv, None if p.is_admin else len(messages)),
        "messages": [email_summary(m) for m in messages],
    }


@router.patch("/v1/conversations/{conversation_id}")
def patch_conversation(
    conversation_id: DbId, body: ConversationPatch, session: SessionDep, p: UserDep
) -> dict:
    fields = {k: getattr(body, k) for k in body.model_fields_set}
    if "status" in fields and fields["status"] is None:
        fields.pop("status")
    conv = svc.update_conversation(
        session=session, principal=p, conversation_id=conversation_id, fields=fields
    )
    counts = svc.visible_counts(session=session, principal=p, conversation_ids=[conv.id])
    return conversation_view(conv, None if counts is None else counts.get(conv.id, 0))


@router.post("/v1/inboxes/{inbox_id}/rules/test")
def test_rules(inbox_id: DbId, body: RawIn, session: SessionDep, p: UserDep) -> dict:
    """Which rule would fire on this raw message, and why each earlier one did not."""
    inbox = get_inbox(session=session, principal=p, inbox_id=inbox_id)
    pm = parse_message(body.raw.encode("utf-8", "surrogateescape"))
    facts = routing_facts(session=session, account_id=inbox.account_id, pm=pm)
    result = route(get_rules(session=session, inbox_id=inbox.id), facts)
    return {
        "matched": result.matched,
        "rule_name": result.rule_name,
        "action": result.action,
        "tags": list(result.tags),
        "trace": list(result.trace),
    }

"""Team inboxes and their routing rules."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import ContextDep, DbId, ListPageDep, SessionDep, UserDep
from gateway.api.views import inbox_view
from shared.rules.schema import Rule
from shared.services import inboxes as svc

router = APIRouter(tags=["inboxes"])


class InboxIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    sender_name: str | None = Field(default=None, max_length=200)
    member_ids: list[DbId] = Field(default_factory=list)


class InboxPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    sender_name: str | None = Field(default=None, max_length=200)
    member_ids: list[DbId] | None = None


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Rule] = Field(max_length=500)


def rules_view(rules: list[Rule]) -> dict[str, Any]:
    return {"items": [r.model_dump(exclude_none=True) for r in rules]}


@router.post("/v1/inboxes", status_code=201)
def create_inbox(body: InboxIn, ctx: ContextDep, session: SessionDep, p: UserDep) -> dict[str, Any]:
    inbox = svc.create_inbox(
        session=session,
        principal=p,
        name=body.name,
        sender_name=body.sender_name,
        member_ids_=body.member_ids,
    )
    return inbox_view(session, inbox, ctx.settings.logging_domain)


@router.get("/v1/inboxes")
def list_inboxes(
    ctx: ContextDep, session: SessionDep, p: UserDep, pg: ListPageDep
) -> dict[str, Any]:
    """The inboxes the caller sees (admins: all; members: theirs), newest first."""
    inboxes = svc.list_inboxes(
        session=session, principal=p, limit=pg.limit, offset=pg.offset, before_id=pg.before_id
    )
    members = svc.members_of(session=session, inbox_ids=[i.id for i in inboxes])
    domain = ctx.settings.logging_domain
    return {"items": [inbox_view(session, i, domain, members[i.id]) for i in inboxes]}


@router.get("/v1/inboxes/{inbox_id}")
def get_inbox(inbox_id: DbId, ctx: ContextDep, session: SessionDep, p: UserDep) -> dict[str, Any]:
    inbox = svc.get_inbox(session=session, principal=p, inbox_id=inbox_id)
    return inbox_view(session, inbox, ctx.settings.logging_domain)


@router.patch("/v1/inboxes/{inbox_id}")
def patch_inbox(
    inbox_id: DbId, body: InboxPatch, ctx: ContextDep, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    inbox = svc.update_inbox(
        session=session,
        principal=p,
        inbox_id=inbox_id,
        # InboxPatch's fields are InboxChanges' keys, with the same types.
        fields=cast(svc.InboxChanges, {k: getattr(body, k) for k in body.model_fields_set}),
    )
    return inbox_view(session, inbox, ctx.settings.logging_domain)


@router.get("/v1/inboxes/{inbox_id}/rules")
def get_rules(inbox_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    inbox = svc.get_inbox(session=session, principal=p, inbox_id=inbox_id)
    return rules_view(svc.get_rules(session=session, inbox_id=inbox.id))


@router.put("/v1/inboxes/{inbox_id}/rules")
def put_rules(inbox_id: DbId, body: RulesIn, session: SessionDep, p: UserDep) -> dict[str, Any]:
    return rules_view(
        svc.replace_rules(session=session, principal=p, inbox_id=inbox_id, rules=body.items)
    )

"""Logged emails on timelines, one email in full, and the decisions that explain them."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from gateway.api.deps import DbId, ListPageDep, SessionDep, UserDep
from gateway.api.views import decision_view, email_summary, email_view
from shared.rules.codes import Outcome, Source
from shared.services import crm, tracking
from shared.services import emails as svc

router = APIRouter(tags=["emails"])


class EmailPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    visibility: Literal["account", "private"]


@router.get("/v1/contacts/{contact_id}/emails")
def contact_emails(
    contact_id: DbId, session: SessionDep, p: UserDep, pg: ListPageDep
) -> dict[str, Any]:
    """Email summaries, newest first (by date, falling back to received_at; then
    received_at, then id). ``before_id``: the last email of the previous page."""
    crm.get_contact(session=session, principal=p, contact_id=contact_id)
    found = svc.emails_of_contact(
        session=session,
        principal=p,
        contact_id=contact_id,
        limit=pg.limit,
        offset=pg.offset,
        before_id=pg.before_id,
    )
    return {"items": [email_summary(e) for e in found]}


@router.get("/v1/companies/{company_id}/emails")
def company_emails(
    company_id: DbId, session: SessionDep, p: UserDep, pg: ListPageDep
) -> dict[str, Any]:
    """Email summaries, newest first, as for a contact."""
    crm.get_company(session=session, principal=p, company_id=company_id)
    found = svc.emails_of_company(
        session=session,
        principal=p,
        company_id=company_id,
        limit=pg.limit,
        offset=pg.offset,
        before_id=pg.before_id,
    )
    return {"items": [email_summary(e) for e in found]}


@router.get("/v1/emails/{email_id}")
def get_email(email_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    email = svc.get_email(session=session, principal=p, email_id=email_id)
    view = email_view(email, svc.email_links(session, email.id))
    view["tracking"] = tracking.summary(session=session, email_id=email.id)
    return view


@router.patch("/v1/emails/{email_id}")
def patch_email(
    email_id: DbId, body: EmailPatch, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    email = svc.set_visibility(
        session=session, principal=p, email_id=email_id, visibility=body.visibility
    )
    return email_view(email, svc.email_links(session, email.id))


@router.get("/v1/decisions")
def list_decisions(
    session: SessionDep,
    p: UserDep,
    pg: ListPageDep,
    source: Source | None = None,
    outcome: Outcome | None = None,
) -> dict[str, Any]:
    """Decisions, newest first; personal-inbox ones for their owner only (C4)."""
    found = svc.list_decisions(
        session=session,
        principal=p,
        source=source,
        outcome=outcome,
        limit=pg.limit,
        offset=pg.offset,
        before_id=pg.before_id,
    )
    return {"items": [decision_view(d) for d in found]}

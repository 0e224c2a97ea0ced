"""Logged emails on timelines, one email in full, and the decisions that explain them."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from gateway.http.deps import DbId, PageDep, SessionDep, UserDep
from gateway.http.views import decision_view, email_summary, email_view
from shared.rules.codes import OUTCOMES, SOURCES
from shared.services import crm
from shared.services import emails as svc

router = APIRouter(tags=["emails"])


class EmailPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    visibility: Literal["account", "private"]


@router.get("/v1/contacts/{contact_id}/emails")
def contact_emails(contact_id: DbId, session: SessionDep, p: UserDep, pg: PageDep) -> dict:
    crm.get_contact(session=session, principal=p, contact_id=contact_id)
    found = svc.emails_of_contact(
        session=session, principal=p, contact_id=contact_id, limit=pg.limit, offset=pg.offset
    )
    return {"items": [email_summary(e) for e in found]}


@router.get("/v1/companies/{company_id}/emails")
def company_emails(company_id: DbId, session: SessionDep, p: UserDep, pg: PageDep) -> dict:
    crm.get_company(session=session, principal=p, company_id=company_id)
    found = svc.emails_of_company(
        session=session, principal=p, company_id=company_id, limit=pg.limit, offset=pg.offset
    )
    return {"items": [email_summary(e) for e in found]}


@router.get("/v1/emails/{email_id}")
def get_email(email_id: DbId, session: SessionDep, p: UserDep) -> dict:
    email = svc.get_email(session=session, principal=p, email_id=email_id)
    return email_view(email, svc.email_links(session, email.id))


@router.patch("/v1/emails/{email_id}")
def patch_email(email_id: DbId, body: EmailPatch, session: SessionDep, p: UserDep) -> dict:
    email = svc.set_visibility(
        session=session, principal=p, email_id=email_id, visibility=body.visibility
    )
    return email_view(email, svc.email_links(session, email.id))


@router.get("/v1/decisions")
def list_decisions(
    session: SessionDep,
    p: UserDep,
    pg: PageDep,
    source: Literal[SOURCES] | None = None,  # type: ignore[valid-type]
    outcome: Literal[OUTCOMES] | None = None,  # type: ignore[valid-type]
) -> dict:
    found = svc.list_decisions(
        session=session,
        principal=p,
        source=source,
        outcome=outcome,
        limit=pg.limit,
        offset=pg.offset,
    )
    return {"items": [decision_view(d) for d in found]}

"""Contacts and companies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from gateway.api.deps import DbId, ListPageDep, SessionDep, UserDep
from gateway.api.views import company_view, contact_view
from shared.services import crm as svc
from shared.services.accounts import get_account, settings_of

router = APIRouter(tags=["contacts"])


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr
    name: str | None = Field(default=None, max_length=200)
    owner_id: DbId | None = None


@router.post("/v1/contacts", status_code=201)
def create_contact(body: ContactIn, session: SessionDep, p: UserDep) -> dict[str, Any]:
    account = get_account(session=session, account_id=p.user_account_id())
    contact = svc.create_contact(
        session=session,
        principal=p,
        email=body.email,
        name=body.name,
        owner_id=body.owner_id,
        associate_companies=settings_of(account).associate_companies,
    )
    return contact_view(contact)


@router.get("/v1/contacts")
def list_contacts(
    session: SessionDep, p: UserDep, pg: ListPageDep, email: str | None = None
) -> dict[str, Any]:
    """Contacts, newest first (``email``: the one with that address)."""
    found = svc.find_contacts(
        session=session,
        principal=p,
        email=email,
        limit=pg.limit,
        offset=pg.offset,
        before_id=pg.before_id,
    )
    return {"items": [contact_view(c) for c in found]}


@router.get("/v1/contacts/{contact_id}")
def get_contact(contact_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    return contact_view(svc.get_contact(session=session, principal=p, contact_id=contact_id))


class ContactPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    owner_id: DbId | None = None
    tracking_opt_out: bool | None = None


@router.patch("/v1/contacts/{contact_id}")
def patch_contact(
    contact_id: DbId, body: ContactPatch, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    contact = svc.get_contact(session=session, principal=p, contact_id=contact_id)
    changes = body.model_dump(exclude_unset=True)
    if "owner_id" in changes and changes["owner_id"] is not None:
        svc.check_owner(session=session, principal=p, owner_id=changes["owner_id"])
    for key, value in changes.items():
        setattr(contact, key, value)
    session.flush()
    return contact_view(contact)


@router.get("/v1/companies")
def list_companies(
    session: SessionDep, p: UserDep, pg: ListPageDep, domain: str | None = None
) -> dict[str, Any]:
    """Companies, newest first (``domain``: the one of that domain)."""
    found = svc.find_companies(
        session=session,
        principal=p,
        domain=domain,
        limit=pg.limit,
        offset=pg.offset,
        before_id=pg.before_id,
    )
    return {"items": [company_view(c) for c in found]}


@router.get("/v1/companies/{company_id}")
def get_company(company_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    return company_view(svc.get_company(session=session, principal=p, company_id=company_id))

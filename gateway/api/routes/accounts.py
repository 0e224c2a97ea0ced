"""Accounts (operator), the caller's account and its settings (admin)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from pydantic import ValidationError as PydanticValidationError

from gateway.api.deps import ContextDep, PrincipalDep, SessionDep, UserDep
from gateway.api.views import account_view, user_view
from shared.errors import Invalid
from shared.services import accounts as svc

router = APIRouter(tags=["accounts"])


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    admin_email: EmailStr
    admin_name: str | None = Field(default=None, max_length=200)


class SettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    never_log: list[str] | None = None
    internal_domains: list[str] | None = None
    create_contacts: bool | None = None
    associate_companies: bool | None = None
    personal_logging: Literal["all", "replies_only"] | None = None
    sender_verification: Literal["known_sender", "dkim", "off"] | None = None
    trusted_authserv_ids: list[str] | None = None


@router.post("/v1/accounts", status_code=201)
def create_account(
    body: AccountIn, ctx: ContextDep, session: SessionDep, p: PrincipalDep
) -> dict[str, Any]:
    p.require_operator()
    account, admin, token = svc.create_account(
        session=session, name=body.name, admin_email=body.admin_email, admin_name=body.admin_name
    )
    return {
        "account": account_view(account, ctx.settings.logging_domain),
        "admin": user_view(admin),
        "token": token,
    }


@router.get("/v1/account")
def get_account(ctx: ContextDep, session: SessionDep, p: UserDep) -> dict[str, Any]:
    account = svc.get_account(session=session, account_id=p.user_account_id())
    return account_view(account, ctx.settings.logging_domain)


@router.patch("/v1/account/settings")
def patch_settings(
    body: SettingsPatch, ctx: ContextDep, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    p.require_admin()
    account = svc.get_account(session=session, account_id=p.user_account_id())
    try:
        svc.update_settings(
            session=session, account=account, patch=body.model_dump(exclude_unset=True)
        )
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise Invalid(f"{field}: {err['msg']}", details={"field": field}) from exc
    return account_view(account, ctx.settings.logging_domain)

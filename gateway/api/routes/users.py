"""Users of the caller's account and their log/track defaults."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from gateway.api.deps import DbId, ListPageDep, SessionDep, UserDep
from gateway.api.views import defaults_view, user_view
from shared.services import users as svc

router = APIRouter(tags=["users"])


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr
    name: str | None = Field(default=None, max_length=200)
    role: Literal["admin", "member"] = "member"


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    role: Literal["admin", "member"] | None = None
    active: bool | None = None


class DefaultsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log: bool
    track: bool
    never_log: list[str] = Field(default_factory=list, max_length=1000)


@router.post("/v1/users", status_code=201)
def create_user(body: UserIn, session: SessionDep, p: UserDep) -> dict[str, Any]:
    user, token = svc.create_user(
        session=session, principal=p, email=body.email, name=body.name, role=body.role
    )
    return {"user": user_view(user), "token": token}


@router.get("/v1/users")
def list_users(session: SessionDep, p: UserDep, pg: ListPageDep) -> dict[str, Any]:
    """The account's users, newest first."""
    users = svc.list_users(
        session=session, principal=p, limit=pg.limit, offset=pg.offset, before_id=pg.before_id
    )
    return {"items": [user_view(u) for u in users]}


@router.get("/v1/users/{user_id}")
def get_user(user_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    return user_view(svc.get_user(session=session, principal=p, user_id=user_id))


@router.patch("/v1/users/{user_id}")
def patch_user(user_id: DbId, body: UserPatch, session: SessionDep, p: UserDep) -> dict[str, Any]:
    fields = body.model_fields_set
    user = svc.update_user(
        session=session,
        principal=p,
        user_id=user_id,
        name=body.name,
        role=body.role,
        active=body.active,
        fields=set(fields),
    )
    return user_view(user)


@router.get("/v1/users/{user_id}/defaults")
def get_defaults(user_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    user = svc.get_user(session=session, principal=p, user_id=user_id)
    svc.check_self_or_admin(p, user)
    return defaults_view(user)


@router.put("/v1/users/{user_id}/defaults")
def put_defaults(
    user_id: DbId, body: DefaultsIn, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    user = svc.set_defaults(
        session=session,
        principal=p,
        user_id=user_id,
        log=body.log,
        track=body.track,
        never_log=body.never_log,
    )
    return defaults_view(user)

"""Request dependencies: a transactional session, the authenticated principal, paging."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import annotated_types
import sqlalchemy as sa
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from gateway.http.context import ApiContext
from shared.crypto import hash_token
from shared.db.models import ApiToken, User
from shared.errors import DomainError
from shared.principal import Principal

bearer = HTTPBearer(auto_error=False, description="A user token, or the operator token")


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


def context(request: Request) -> ApiContext:
    return request.app.state.ctx


def db_session(ctx: Annotated[ApiContext, Depends(context)]) -> Iterator[Session]:
    with ctx.sessions() as session, session.begin():
        yield session


def principal(
    ctx: Annotated[ApiContext, Depends(context)],
    session: Annotated[Session, Depends(db_session)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if creds is None or not creds.credentials:
        raise Unauthorized("missing bearer token")
    token = creds.credentials
    admin = ctx.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(kind="operator")
    row = session.execute(
        sa.select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token))
    ).scalar_one_or_none()
    if row is None or not row.active:
        raise Unauthorized("invalid or revoked token")
    return Principal(kind="user", account_id=row.account_id, user_id=row.id, role=row.role)


def user_principal(p: Annotated[Principal, Depends(principal)]) -> Principal:
    p.require_user()
    return p


# Ids are 32-bit INTEGER columns on PostgreSQL (SQLite takes 64-bit): a larger or non-positive
# number names nothing, and passing it to the driver fails with an overflow (a 500) instead of
# a lookup. Every id the API takes — path, query or body — is this type, so it is refused (422)
# at the edge. The same bound caps paging offsets.
MAX_DB_INT = 2**31 - 1
DbId = Annotated[int, annotated_types.Interval(ge=1, le=MAX_DB_INT)]


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page(
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> Page:
    return Page(limit=min(limit, 500), offset=offset)


SessionDep = Annotated[Session, Depends(db_session)]
PrincipalDep = Annotated[Principal, Depends(principal)]
UserDep = Annotated[Principal, Depends(user_principal)]
PageDep = Annotated[Page, Depends(page)]
ContextDep = Annotated[ApiContext, Depends(context)]

"""Request dependencies: a transactional session, the authenticated principal, paging."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types
import sqlalchemy as sa
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from gateway.http.context import ApiContext
from shared.crypto import hash_token
from shared.db.models import ApiToken, User
from shared.errors import DomainError, Invalid
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


def _unstorable(value: Any, loc: list[Any]) -> list[Any] | None:
    """The location of the first string the databases cannot store, else None.

    NUL is refused by PostgreSQL text columns, and a lone surrogate (valid JSON ``"\\ud800"``)
    cannot be encoded as UTF-8 by either driver: both surfaced as 500s deep in a write.
    """
    if isinstance(value, str):
        if "\x00" in value:
            return loc
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return loc
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unstorable(key, [*loc, key]) or _unstorable(item, [*loc, key])
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _unstorable(item, [*loc, i])
            if found is not None:
                return found
    return None


async def storable_text(request: Request) -> None:
    """Refuse (422) any query parameter or JSON string holding NUL or a lone surrogate."""
    found = _unstorable(dict(request.query_params.multi_items()), ["query"])
    if found is None and request.headers.get("content-type", "").startswith("application/json"):
        try:
            found = _unstorable(await request.json(), ["body"])
        except ValueError:  # not JSON at all: the route's own validation answers
            found = None
    if found is not None:
        where = ".".join(str(x) for x in found)
        raise Invalid(
            f"{where}: text must not contain NUL or invalid Unicode",
            details={"errors": [{"loc": found, "msg": "unstorable text", "type": "string"}]},
        )


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

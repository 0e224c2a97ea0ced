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

from gateway.api.context import ApiContext
from shared.crypto import hash_token
from shared.db.models import ApiToken, User
from shared.errors import DomainError, Invalid
from shared.principal import Principal

bearer = HTTPBearer(auto_error=False, description="A user token, or the operator token")


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


async def context(request: Request) -> ApiContext:  # async: no thread hop to read a field
    ctx: ApiContext = request.app.state.ctx  # set by create_app (Starlette's state is untyped)
    return ctx


def db_session(ctx: Annotated[ApiContext, Depends(context)]) -> Iterator[Session]:
    """One transaction per request, committed when the route function returns.

    Used with ``scope="function"`` (:data:`SessionDep`): FastAPI runs a yield dependency's
    exit code *after the response is sent* by default ("request" scope), so a client could
    get a 201 and use what it created before the commit — or get a 201 for a commit that
    then failed. In function scope the commit runs before the answer leaves, and a failed
    commit becomes an error answer.
    """
    with ctx.sessions() as session, session.begin():
        yield session


# Every user of the session must name the same scope: the dependency cache is per scope, and
# two scopes would mean two sessions (two transactions) in one request.
SessionDep = Annotated[Session, Depends(db_session, scope="function")]


def is_operator_token(ctx: ApiContext, creds: HTTPAuthorizationCredentials | None) -> bool:
    """The operator token, compared in constant time (no database needed)."""
    admin = ctx.settings.admin_token
    if not admin or creds is None or not creds.credentials:
        return False
    return hmac.compare_digest(creds.credentials.encode(), admin.encode())


def principal(
    ctx: Annotated[ApiContext, Depends(context)],
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if creds is None or not creds.credentials:
        raise Unauthorized("missing bearer token")
    token = creds.credentials
    if is_operator_token(ctx, creds):
        return Principal(kind="operator")
    row = session.execute(
        sa.select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token))
    ).scalar_one_or_none()
    if row is None or not row.active:
        raise Unauthorized("invalid or revoked token")
    return Principal(kind="user", account_id=row.account_id, user_id=row.id, role=row.role)


async def user_principal(p: Annotated[Principal, Depends(principal)]) -> Principal:
    # async, like the paging dependencies: no blocking work, so no thread hop.
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


async def page(
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> Page:
    return Page(limit=min(limit, 500), offset=offset)


@dataclass(frozen=True)
class ListPage(Page):
    """A page by offset, or by keyset: ``before_id`` is the id of the last item of the
    previous page, and the page holds the items that follow it in the list's order."""

    before_id: int | None = None


BEFORE_ID_HELP = (
    "Keyset paging: the id of the last item of the previous page; answers the items that "
    "come after it in this list's order (a deep page costs what the first one does)."
)


async def list_page(
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    before_id: Annotated[DbId | None, Query(description=BEFORE_ID_HELP)] = None,
) -> ListPage:
    return ListPage(limit=min(limit, 500), offset=offset, before_id=before_id)


PrincipalDep = Annotated[Principal, Depends(principal)]
UserDep = Annotated[Principal, Depends(user_principal)]
PageDep = Annotated[Page, Depends(page)]
ListPageDep = Annotated[ListPage, Depends(list_page)]
ContextDep = Annotated[ApiContext, Depends(context)]

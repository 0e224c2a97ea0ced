"""Connected addresses (§3) and their sync requests."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.context import ApiContext
from gateway.api.deps import ContextDep, DbId, ListPageDep, SessionDep, UserDep
from shared.networks import Networks
from shared.services import connections as svc

router = APIRouter(tags=["connections"])


def server_check(ctx: ApiContext) -> svc.ServerCheck:
    """Where user-named servers may live (§6 Network safety), from the settings; a resolver
    handed in through the context (tests: no DNS here) takes the place of the system's."""
    return svc.server_check(
        Networks.parse(ctx.settings.allowed_private_networks), ctx.extras.get("resolver")
    )


class ImapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["ssl", "starttls", "none"] | None = None
    username: str | None = Field(default=None, min_length=1, max_length=320)
    password: str | None = Field(default=None, min_length=1, max_length=4096)
    folders: list[str] | None = None
    since: dt.date | None = None


class SmtpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["ssl", "starttls", "none"] | None = None
    username: str | None = Field(default=None, min_length=1, max_length=320)
    password: str | None = Field(default=None, min_length=1, max_length=4096)
    save_sent: Literal["auto", "always", "never"] | None = None


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    kind: Literal["personal", "team"]
    user_id: DbId | None = None
    inbox_id: DbId | None = None
    meetings: bool = False
    imap: ImapIn | None = None
    smtp: SmtpIn | None = None


class ConnectionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    imap: ImapIn | None = None
    smtp: SmtpIn | None = None
    meetings: bool | None = None


class SyncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: dt.date | None = None


@router.post("/v1/connections", status_code=201)
def create_connection(
    body: ConnectionIn, ctx: ContextDep, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    conn = svc.create_connection(
        session=session,
        principal=p,
        box=ctx.box,
        address=body.address,
        kind=body.kind,
        user_id=body.user_id,
        inbox_id=body.inbox_id,
        meetings=body.meetings,
        imap=body.imap.model_dump(exclude_unset=True) if body.imap else None,
        smtp=body.smtp.model_dump(exclude_unset=True) if body.smtp else None,
        check=server_check(ctx),
    )
    return svc.connection_view(session=session, principal=p, conn=conn)


@router.get("/v1/connections")
def list_connections(session: SessionDep, p: UserDep, pg: ListPageDep) -> dict[str, Any]:
    conns = svc.list_connections(
        session=session, principal=p, limit=pg.limit, offset=pg.offset, before_id=pg.before_id
    )
    return {"items": svc.connection_views(session=session, principal=p, conns=conns)}


@router.get("/v1/connections/{connection_id}")
def get_connection(connection_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    conn = svc.get_connection(session=session, principal=p, connection_id=connection_id)
    return svc.connection_view(session=session, principal=p, conn=conn)


@router.patch("/v1/connections/{connection_id}")
def patch_connection(
    connection_id: DbId, body: ConnectionPatch, ctx: ContextDep, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    conn = svc.update_connection(
        session=session,
        principal=p,
        box=ctx.box,
        connection_id=connection_id,
        imap=body.imap.model_dump(exclude_unset=True) if body.imap else None,
        meetings=body.meetings,
        check=server_check(ctx),
        smtp=body.smtp.model_dump(exclude_unset=True) if body.smtp else None,
    )
    return svc.connection_view(session=session, principal=p, conn=conn)


@router.delete("/v1/connections/{connection_id}", status_code=204)
def delete_connection(connection_id: DbId, session: SessionDep, p: UserDep) -> Response:
    svc.delete_connection(session=session, principal=p, connection_id=connection_id)
    return Response(status_code=204)


@router.post("/v1/connections/{connection_id}/sync", status_code=202)
def sync_connection(
    connection_id: DbId, session: SessionDep, p: UserDep, body: SyncIn | None = None
) -> dict[str, Any]:
    since = body.since if body else None
    conn = svc.request_sync(session=session, principal=p, connection_id=connection_id, since=since)
    return {
        "id": conn.id,
        "status": conn.status,
        "sync_requested": True,
        "since": since.isoformat() if since else None,
    }


@router.post("/v1/connections/{connection_id}/verify")
def verify_connection(connection_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    """C7: an admin confirms a personal connection's address is its owner's."""
    conn = svc.verify_connection(session=session, principal=p, connection_id=connection_id)
    return svc.connection_view(session=session, principal=p, conn=conn)

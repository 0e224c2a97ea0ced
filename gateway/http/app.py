"""The FastAPI application factory; the CLI builds the context and passes it in."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from gateway.http import errors
from gateway.http.context import ApiContext
from gateway.http.deps import storable_text
from gateway.http.routes import (
    accounts,
    attachments,
    connections,
    conversations,
    crm,
    emails,
    health,
    inboxes,
    ops,
    users,
)

ROUTERS = (
    health,
    accounts,
    users,
    inboxes,
    connections,
    crm,
    emails,
    attachments,
    conversations,
    ops,
)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="inboxlog",
        version="0.1.0",
        description="Email ingestion for a CRM: intake addresses, connected inboxes, "
        "logged emails and the reason for every decision.",
        dependencies=[Depends(storable_text)],
    )
    app.state.ctx = ctx
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    for extra in ctx.extras.get("routers", ()):
        app.include_router(extra)
    return app

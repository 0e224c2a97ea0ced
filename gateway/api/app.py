"""The FastAPI application factory; the CLI builds the context and passes it in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from gateway.api import errors
from gateway.api.context import ApiContext
from gateway.api.deps import storable_text
from gateway.api.limits import DEFAULT_BODY_LIMIT, BodyLimit, raw_body_limit
from gateway.api.routes import (
    accounts,
    attachments,
    connections,
    conversations,
    crm,
    emails,
    health,
    inboxes,
    oauth,
    ops,
    outbound,
    tracking,
    users,
)
from gateway.api.tracking_lane import TrackingLane

ROUTERS = (
    health,
    accounts,
    users,
    inboxes,
    oauth,
    connections,
    crm,
    emails,
    attachments,
    conversations,
    outbound,
    tracking,
    ops,
)


def create_app(ctx: ApiContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(ctx.close)  # e.g. writes the tracking events still queued

    app = FastAPI(
        lifespan=lifespan,
        title="inboxlog",
        version="0.1.0",
        description="Email ingestion for a CRM: intake addresses, connected inboxes, "
        "logged emails and the reason for every decision.",
        dependencies=[Depends(storable_text)],
    )
    app.state.ctx = ctx
    errors.install(app)
    app.add_middleware(
        BodyLimit,
        default_limit=DEFAULT_BODY_LIMIT,
        raw_limit=raw_body_limit(ctx.settings.max_message_bytes),
    )
    # Outermost of ours: the tracking endpoints skip the body limit and the router entirely.
    app.add_middleware(TrackingLane, ctx=ctx)
    for module in ROUTERS:
        app.include_router(module.router)
    for extra in ctx.extras.get("routers", ()):
        app.include_router(extra)
    return app

"""OAuth connections (§10): the providers, the authorization request, and the callback page.

The callback is where a person's browser lands: it answers a small HTML page in words —
what was connected, or what went wrong with the error code — and nothing secret (the code and
tokens never appear in a page, an answer or a log line; uvicorn's access log is off).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.context import ApiContext
from gateway.api.deps import ContextDep, DbId, SessionDep, UserDep
from shared.networks import Networks
from shared.oauth.client import OAuth2Client, oauth_client
from shared.oauth.providers import OAuthProvider
from shared.services import oauth_connect

log = logging.getLogger("inboxlog.api")
router = APIRouter(tags=["oauth"])
CALLBACK_PATH = "/oauth/callback"


def redirect_uri(ctx: ApiContext) -> str:
    return ctx.settings.public_url.rstrip("/") + CALLBACK_PATH


def client_factory(ctx: ApiContext) -> oauth_connect.ClientFactory:
    """Authlib clients that dial only vetted addresses (§6), with our redirect URI."""

    def make(provider: OAuthProvider) -> OAuth2Client:
        return oauth_client(
            provider,
            allowed=Networks.parse(ctx.settings.allowed_private_networks),
            redirect_uri=redirect_uri(ctx),
            ca_file=ctx.settings.imap_ca_file or None,
            **({"resolver": ctx.extras["resolver"]} if "resolver" in ctx.extras else {}),
        )

    return make


class OAuthConnectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str = Field(min_length=1, max_length=64)
    kind: Literal["personal", "team"] | None = None
    inbox_id: DbId | None = None
    user_id: DbId | None = None
    connection_id: DbId | None = None
    imap_since: dt.date | None = None


@router.get("/v1/oauth/providers")
def list_providers(ctx: ContextDep, p: UserDep) -> dict[str, Any]:
    p.require_user()
    return {
        "items": [
            {"name": pr.name, "imap_host": pr.imap_host, "smtp_host": pr.smtp_host}
            for pr in ctx.settings.oauth_providers().values()
        ]
    }


@router.post("/v1/connections/oauth")
def connect_with_oauth(
    body: OAuthConnectIn, ctx: ContextDep, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    url = oauth_connect.start(
        session=session,
        principal=p,
        box=ctx.box,
        providers=ctx.settings.oauth_providers(),
        client_for=client_factory(ctx),
        provider_name=body.provider,
        kind=body.kind,
        user_id=body.user_id,
        inbox_id=body.inbox_id,
        connection_id=body.connection_id,
        imap_since=body.imap_since,
    )
    return {"authorize_url": url}


@router.get(CALLBACK_PATH, response_class=HTMLResponse, include_in_schema=False)
def oauth_callback(
    ctx: ContextDep,
    state: str | None = Query(default=None, max_length=512),
    code: str | None = Query(default=None, max_length=4096),
    error: str | None = Query(default=None, max_length=256),
) -> HTMLResponse:
    try:
        done = oauth_connect.finish(
            sessions=ctx.sessions,
            box=ctx.box,
            providers=ctx.settings.oauth_providers(),
            client_for=client_factory(ctx),
            state=state,
            code=code,
            error=error,
        )
    except oauth_connect.CallbackError as exc:
        return _page(exc.status, "Not connected", exc.message, exc.code)
    except Exception as exc:  # a person is looking at this page: words, not a JSON 500
        log.error("oauth callback failed: %s", type(exc).__name__)
        return _page(
            500,
            "Not connected",
            "Something went wrong on our side. Nothing was connected.",
            "internal_error",
        )
    verb = "reconnected" if done.reconnected else "connected"
    what = "team inbox" if done.kind == "team" else "mailbox"
    return _page(
        200,
        "Connected",
        f"The {what} {done.address} is {verb} with {done.provider} "
        f"(connection {done.connection_id}). Mail arriving from now on will be read; "
        "you can close this page.",
        None,
    )


def _page(status: int, title: str, sentence: str, code: str | None) -> HTMLResponse:
    detail = f"<p>Error code: <code>{html.escape(code)}</code></p>" if code else ""
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>inboxlog: {html.escape(title)}</title>"
        "<meta name=viewport content='width=device-width'></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(sentence)}</p>{detail}</body></html>"
    )
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'none'",
    }
    return HTMLResponse(body, status_code=status, headers=headers)

"""Tracking endpoints (§9): the open pixel and the click redirect, which anyone's mail client
calls, and the events of an email, which its readers see.

An unknown or altered token answers 404 — never a redirect, so these routes are no open
redirect. Each hit is one indexed write; a client over its rate gets 429 and records nothing.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.api.clients import RateLimiter, client_ip
from gateway.api.context import ApiContext
from gateway.api.deps import ContextDep, DbId, SessionDep, UserDep
from shared.db.base import utcnow
from shared.networks import Networks
from shared.services import emails as emails_svc
from shared.services import tracking as svc

router = APIRouter(tags=["tracking"])
# A transparent 1×1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
# Per client address: a mail client opening one message makes a handful of requests; a proxy
# fetching for many readers makes more, so the burst is generous.
RATE_PER_SECOND, BURST = 20.0, 200.0


def _limiter(ctx: ApiContext) -> RateLimiter:
    found = ctx.extras.get("tracking_limiter")
    if found is None:
        found = ctx.extras["tracking_limiter"] = RateLimiter(RATE_PER_SECOND, BURST)
    return found


def _hit(ctx: ApiContext, request: Request, token: str, kind: str) -> svc.Recorded | Response:
    ip = client_ip(request, Networks.parse(ctx.settings.trusted_proxies))
    if not _limiter(ctx).allow(ip):
        return Response(status_code=429, headers={"Retry-After": "1"})
    with ctx.sessions() as session, session.begin():
        found = svc.record_hit(
            session=session,
            token=token,
            kind=kind,
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            client_ip=ip,
            now=utcnow(),
        )
    if found is None:
        return Response(status_code=404, headers=NO_STORE)
    return found


@router.api_route("/t/o/{token}", methods=["GET", "HEAD"], include_in_schema=False)
def open_pixel(token: str, request: Request, ctx: ContextDep) -> Response:
    found = _hit(ctx, request, token, "open")
    if isinstance(found, Response):
        return found
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.api_route("/t/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
def click(token: str, request: Request, ctx: ContextDep) -> Response:
    found = _hit(ctx, request, token, "click")
    if isinstance(found, Response):
        return found
    assert found.url is not None  # click tokens always carry their destination
    return RedirectResponse(found.url, status_code=302, headers=NO_STORE)


@router.get("/v1/emails/{email_id}/events")
def email_events(email_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    emails_svc.get_email(session=session, principal=p, email_id=email_id)  # visibility (C4)
    return {"items": svc.events(session=session, email_id=email_id)}

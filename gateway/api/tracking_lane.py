"""The tracking endpoints (§9) — ``GET /t/o/{token}``, the open pixel, and ``GET /t/c/{token}``,
the click redirect — which anyone's mail client calls, thousands of times a second at a
campaign's peak.

They are served here, in front of the API's router, as a plain ASGI lane: no routing through
a hundred routes, no dependency injection, no thread per request. Tokens are read and events
written in batches by one thread (:class:`HitRecorder`), known links kept in memory
(:class:`LinkCache`); a hit is answered once its event is stored.

An unknown or altered token answers 404 — never a redirect, so these routes are no open
redirect. A client over its rate gets 429 and records nothing. When the database cannot take
the event, a pixel answers 503; a click still takes its reader where the link goes when its
link is known (else 503 too).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.clients import RateLimiter, client_ip
from gateway.api.context import ApiContext
from gateway.api.link_cache import LinkCache
from gateway.api.tracking_writer import Hit, HitRecorder, Outcome, Overloaded
from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory
from shared.networks import Networks
from shared.services.tracking import MAX_TOKEN

# A transparent 1×1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PREFIXES = {"/t/o/": "open", "/t/c/": "click"}
# Per client address: a mail client opening one message makes a handful of requests; a proxy
# fetching for many readers makes more, so the burst is generous.
RATE_PER_SECOND, BURST = 20.0, 200.0
NO_STORE = [(b"cache-control", b"no-store, private"), (b"referrer-policy", b"no-referrer")]


@dataclass
class TrackingState:
    """What the lane keeps between requests, one per API process."""

    ctx: ApiContext
    proxies: Networks
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(RATE_PER_SECOND, BURST))
    links: LinkCache = field(default_factory=LinkCache)
    recorder: HitRecorder = field(init=False)

    def __post_init__(self) -> None:
        # The recorder's own connection, kept between batches: no pool checkout and no
        # liveness ping per batch (a connection that died is replaced after its error).
        bind = self.ctx.sessions.kw["bind"]
        engine = make_engine(
            bind.url.render_as_string(hide_password=False),
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=False,
        )
        self.recorder = HitRecorder(make_session_factory(engine))
        self.ctx.closers.append(engine.dispose)
        self.ctx.closers.append(self.recorder.close)  # runs first: writes what is queued


class TrackingLane:
    """ASGI middleware: serves the tracking paths itself and passes everything else on."""

    def __init__(self, app: ASGIApp, *, ctx: ApiContext) -> None:
        self.app = app
        self.state = TrackingState(ctx, Networks.parse(ctx.settings.trusted_proxies))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = PREFIXES.get(scope["path"][:5]) if scope["type"] == "http" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, [(b"allow", b"GET, HEAD")])
            return
        await self._hit(scope, send, kind, scope["path"][5:])

    async def _hit(self, scope: Scope, send: Send, kind: str, token: str) -> None:
        state = self.state
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        peer = scope.get("client")
        ip = client_ip(peer[0] if peer else None, headers.get("x-forwarded-for"), state.proxies)
        if not state.limiter.allow(ip):
            await _answer(send, 429, [(b"retry-after", b"1")])
            return
        if not token or len(token) > MAX_TOKEN or "/" in token:
            await _answer(send, 404, NO_STORE)
            return
        hit = Hit(token, kind, state.links.get(token), scope["method"], headers, ip, utcnow())
        try:
            outcome = await state.recorder.record(hit)
        except Overloaded:
            outcome = Outcome(hit.link, error=True)
        link = outcome.link
        if link is not None:
            state.links.put(link)
        if link is None or (kind == "open" and outcome.error):
            if outcome.error:
                await _answer(send, 503, [*NO_STORE, (b"retry-after", b"1")])
            else:
                await _answer(send, 404, NO_STORE)
            return
        if kind == "open":
            await _answer(send, 200, [*NO_STORE, (b"content-type", b"image/gif")], PIXEL)
            return
        # A click that could not be recorded still takes its reader where the link goes.
        assert link.url is not None  # click links always carry their destination
        location = quote(link.url, safe=":/%#?=@[]!$&'()*+,;~").encode("ascii")
        await _answer(send, 302, [*NO_STORE, (b"location", location)])


async def _answer(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})

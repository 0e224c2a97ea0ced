"""Bounded request bodies: 413 ``body_too_large`` before a body over the limit is read.

A pure ASGI middleware, in front of everything that reads the body: a declared
Content-Length over the limit is answered at once, without reading a byte of the body; a
body without one (chunked) is counted as it streams and refused as soon as the count passes
the limit. Ordinary routes take :data:`DEFAULT_BODY_LIMIT`; the routes that take a whole raw
message as JSON text take :func:`raw_body_limit` of the message size limit.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.errors import envelope

BODY_TOO_LARGE = "body_too_large"
# The largest JSON body an ordinary route takes (500 routing rules fit in a tenth of it).
DEFAULT_BODY_LIMIT = 1024 * 1024
# Routes whose body carries a raw message (``{raw}``), by path.
RAW_MESSAGE_PATHS = re.compile(r"^/v1/inboxes/[^/]+/rules/test/?$")


def raw_body_limit(max_message_bytes: int) -> int:
    """The body limit of a raw-message route: JSON escapes CR LF as four characters and
    quotes and backslashes as two, so a text message's JSON body runs up to about twice its
    size; the route itself then holds the message to ``max_message_bytes``."""
    return 2 * max_message_bytes + DEFAULT_BODY_LIMIT


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit. An HTTPException, so
    FastAPI's body parsing lets it through (any other error there becomes a 400) and the
    app's HTTP error handler answers it in the §7 shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, default_limit: int, raw_limit: int) -> None:
        self.app, self.default_limit, self.raw_limit = app, default_limit, raw_limit

    def limit_for(self, path: str) -> int:
        return self.raw_limit if RAW_MESSAGE_PATHS.match(path) else self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            # Normally answered by the app's handler; this catches a read outside a route.
            if started:
                raise
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = envelope(413, BODY_TOO_LARGE, f"the request body is larger than {limit} bytes")
        # The unread rest of the body makes the connection unusable for another request.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

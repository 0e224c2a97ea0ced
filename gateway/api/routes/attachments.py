"""Attachment downloads: always a download, never rendered by the browser.

The sender's claimed Content-Type is not trusted — a text/html or image/svg+xml attachment
served as such would run in our origin — so every attachment is ``application/octet-stream``
with ``X-Content-Type-Options: nosniff`` and ``Content-Disposition: attachment`` (RFC 6266,
the filename in RFC 5987 ``filename*`` form plus an ASCII fallback).
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path
from fastapi.responses import Response

from gateway.api.deps import DbId, SessionDep, UserDep
from shared.services import attachments as svc

router = APIRouter(tags=["emails"])

_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9!#$&+.^_`|~ -]")
_FALLBACK = "attachment"


def content_disposition(filename: str | None) -> str:
    """``attachment; filename="ascii"; filename*=UTF-8''pct-encoded`` (RFC 6266 §4.3)."""
    name = (filename or "").replace("/", "_").replace("\\", "_").strip() or _FALLBACK
    ascii_name = _UNSAFE_ASCII.sub("_", name).strip() or _FALLBACK
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get(
    "/v1/emails/{email_id}/attachments/{index}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_attachment(
    email_id: DbId,
    index: Annotated[int, Path(ge=0)],
    session: SessionDep,
    p: UserDep,
) -> Response:
    found = svc.get_attachment(session=session, principal=p, email_id=email_id, index=index)
    return Response(
        content=found.data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(found.filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )

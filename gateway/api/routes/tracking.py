"""The events of a tracked email (§9), which its readers see. The pixel and click endpoints
that record them are served by :mod:`gateway.api.tracking_lane`, ahead of this router."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import DbId, ListPageDep, SessionDep, UserDep
from shared.services import emails as emails_svc
from shared.services import tracking as svc

router = APIRouter(tags=["tracking"])


@router.get("/v1/emails/{email_id}/events")
def email_events(
    email_id: DbId, session: SessionDep, p: UserDep, pg: ListPageDep
) -> dict[str, Any]:
    """The email's opens and clicks, oldest first. ``before_id``: the last of the previous
    page."""
    emails_svc.get_email(session=session, principal=p, email_id=email_id)  # visibility (C4)
    found = svc.events(
        session=session,
        email_id=email_id,
        limit=pg.limit,
        offset=pg.offset,
        before_id=pg.before_id,
    )
    return {"items": found}

"""The events of a tracked email (§9), which its readers see. The pixel and click endpoints
that record them are served by :mod:`gateway.api.tracking_lane`, ahead of this router."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import DbId, SessionDep, UserDep
from shared.services import emails as emails_svc
from shared.services import tracking as svc

router = APIRouter(tags=["tracking"])


@router.get("/v1/emails/{email_id}/events")
def email_events(email_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    emails_svc.get_email(session=session, principal=p, email_id=email_id)  # visibility (C4)
    return {"items": svc.events(session=session, email_id=email_id)}

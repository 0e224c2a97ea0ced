"""Sending through inboxlog (§9): the send route and the outbox. The message is built and
stored before 202; the delivery task is enqueued only after that commit."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from gateway.api.context import ApiContext
from gateway.api.deps import ContextDep, DbId, SessionDep, UserDep
from shared.db.models import Outbox
from shared.errors import Invalid
from shared.outbound.compose import Attachment
from shared.services import outbound as svc

router = APIRouter(tags=["outbound"])


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    content_base64: str


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_: str = Field(alias="from", min_length=3, max_length=320)
    to: list[str] = Field(default_factory=list, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    subject: str = Field(default="", max_length=998)
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)
    log: bool | None = None
    track: bool | None = None


def tracking_url(ctx: ApiContext) -> Any:
    base = ctx.settings.public_url.rstrip("/")
    return lambda kind, token: f"{base}/t/{kind}/{token}"


def _attachments(items: list[AttachmentIn]) -> list[Attachment]:
    found = []
    for a in items:
        try:
            content = base64.b64decode(a.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(
                "attachment content_base64 is not base64", details={"field": "attachments"}
            ) from None
        found.append(Attachment(a.filename, a.content_type, content))
    return found


@router.post("/v1/emails/send", status_code=202)
def send_email(body: SendIn, ctx: ContextDep, session: SessionDep, p: UserDep) -> dict[str, Any]:
    if body.text is None and body.html is None:
        raise Invalid("text or html is required", details={"field": "text"})
    row = svc.send_email(
        session=session,
        principal=p,
        logging_domain=ctx.settings.logging_domain,
        tracking_url=tracking_url(ctx),
        max_bytes=ctx.settings.max_message_bytes,
        sender=body.from_,
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        subject=body.subject,
        text=body.text,
        html=body.html,
        attachments=_attachments(body.attachments),
        log=body.log,
        track=body.track,
    )
    return _queued(ctx, session, row)


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    html: str | None = None
    cc: list[str] = Field(default_factory=list, max_length=100)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)
    track: bool | None = None


@router.post("/v1/conversations/{conversation_id}/reply", status_code=202)
def reply(
    conversation_id: DbId, body: ReplyIn, ctx: ContextDep, session: SessionDep, p: UserDep
) -> dict[str, Any]:
    if body.text is None and body.html is None:
        raise Invalid("text or html is required", details={"field": "text"})
    row = svc.reply(
        session=session,
        principal=p,
        logging_domain=ctx.settings.logging_domain,
        tracking_url=tracking_url(ctx),
        max_bytes=ctx.settings.max_message_bytes,
        conversation_id=conversation_id,
        text=body.text,
        html=body.html,
        cc=body.cc,
        attachments=_attachments(body.attachments),
        track=body.track,
    )
    return _queued(ctx, session, row)


def _queued(ctx: ApiContext, session: Session, row: Outbox) -> dict[str, Any]:
    answer = {"outbox_id": row.id, "message_id": row.message_id, "status": row.status}
    session.commit()  # durable before the task can look for it, and before 202
    sender = ctx.extras.get("task_sender")
    if sender is not None:
        sender.deliver([row.id])  # a broker outage leaves it to the sweeper
    return answer


@router.get("/v1/outbox/{outbox_id}")
def get_outbox(outbox_id: DbId, session: SessionDep, p: UserDep) -> dict[str, Any]:
    row = svc.get_outbox(session=session, principal=p, outbox_id=outbox_id)
    return svc.outbox_view(session=session, row=row)

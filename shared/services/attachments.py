"""One attachment of a logged email, as bytes to download (§7), under the email's visibility."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from shared.db.models import StoredMessage
from shared.errors import NotFound
from shared.mail.payloads import find_payload
from shared.principal import Principal
from shared.services.emails import get_email


@dataclass(frozen=True)
class AttachmentFile:
    filename: str | None
    data: bytes


def get_attachment(
    *, session: Session, principal: Principal, email_id: int, index: int
) -> AttachmentFile:
    """Attachment ``index`` (0-based, as listed in the email's ``attachments``).

    404 when the email is not visible, there is no such index, or the raw message it came
    from is no longer kept (skipped or purged raw content is never reconstructed)."""
    email = get_email(session=session, principal=principal, email_id=email_id)
    listed = email.attachments or []
    if not 0 <= index < len(listed):
        raise NotFound("attachment not found")
    meta = listed[index]
    stored = (
        session.get(StoredMessage, email.stored_message_id)
        if email.stored_message_id is not None
        else None
    )
    digest = meta.get("sha256")
    if stored is None or stored.raw is None or not digest:
        raise NotFound("the raw message of this email is no longer kept", code="raw_not_kept")
    data = find_payload(bytes(stored.raw), digest)
    if data is None:
        raise NotFound("attachment content not found in the raw message", code="raw_not_kept")
    return AttachmentFile(filename=meta.get("filename"), data=data)

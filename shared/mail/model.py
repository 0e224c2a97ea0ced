"""Small immutable value types shared by the mail modules (addresses, attachments, bounces)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: ``address`` is normalized (lowercase, IDN in Unicode); ``name`` decoded."""

    address: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attachment as §7 defines it; ``size`` is the decoded size in bytes."""

    filename: str | None
    content_type: str
    size: int
    sha256: str
    inline: bool


@dataclass(frozen=True, slots=True)
class BounceInfo:
    """What a delivery failure report says about the message it reports on (RFC 3464)."""

    original_message_id: str | None
    failed_recipients: tuple[str, ...]

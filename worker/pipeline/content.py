"""What a logged email shows: the message itself, or a forward's original (§4, §7)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from shared.mail import Address, Attachment, ParsedMessage, parse_message
from shared.mail.forwards import ForwardResult
from shared.mail.identity import message_identity


@dataclass(frozen=True)
class EmailContent:
    identity: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    kind: str
    bounce_of_message_id: str | None
    text: str
    html: str | None
    snippet: str
    attachments: tuple[Attachment, ...]


def from_parsed(pm: ParsedMessage, kind: str | None = None) -> EmailContent:
    return EmailContent(
        identity=message_identity(pm),
        message_id=pm.message_id,
        in_reply_to=pm.in_reply_to,
        references=pm.references,
        subject=pm.subject,
        from_=pm.from_,
        to=pm.to,
        cc=pm.cc,
        date=pm.date,
        kind=kind or pm.kind,
        bounce_of_message_id=pm.bounce.original_message_id if pm.bounce else None,
        text=pm.text,
        html=pm.html,
        snippet=pm.snippet,
        attachments=pm.attachments,
    )


def from_forward(pm: ParsedMessage, fr: ForwardResult) -> EmailContent | None:
    """The original of an extracted forward; None when there is nothing trustworthy to show."""
    orig = fr.original
    if fr.status != "extracted" or orig is None:
        return None
    if orig.raw:
        # An attached message/rfc822 is the whole original, exact.
        return from_parsed(parse_message(orig.raw))
    # Inline block: no Message-ID of its own, so the identity is a fingerprint of what we read.
    fingerprint = "\x1f".join(
        [
            "fwd",
            orig.from_.address if orig.from_ else "",
            orig.date.isoformat() if orig.date else "",
            orig.subject,
            " ".join(orig.text.split()),
        ]
    )
    text = orig.text
    return EmailContent(
        identity=hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest(),
        message_id=orig.message_id,
        in_reply_to=None,
        references=(),
        subject=orig.subject,
        from_=orig.from_,
        to=orig.to,
        cc=orig.cc,
        date=orig.date,
        kind=pm.kind,
        bounce_of_message_id=None,
        text=text,
        html=None,
        snippet=" ".join(text.split())[:200],
        attachments=pm.attachments,
    )

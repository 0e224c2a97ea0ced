"""Forwarded mail (spec §4): extract the original message from a forward.

Sources, in order: an attached message/rfc822 (the whole original, exact), else the inline
forward block of the common clients (see :mod:`shared.mail.forwards.blocks`). A forward of a
forward yields the innermost original. A block that looks like a forward but whose From has
no readable address gives status ``"unreadable"`` — we never guess a contact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from shared.mail import linear
from shared.mail.forwards.blockaddr import parse_block_addresses, parse_block_from
from shared.mail.forwards.blocks import Block, find_blocks, split_lines
from shared.mail.forwards.dates import parse_block_date
from shared.mail.model import Address

if TYPE_CHECKING:
    from shared.mail.parse import ParsedMessage

__all__ = ["ForwardResult", "OriginalMessage", "extract_forward", "extract_forward_text"]

# Subjects are the sender's to choose: on RE2 (shared.mail.linear).
_FWD_SUBJECT = linear.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?(?:fwd?|fw|wg|tr|rv|enc|doorst|vs|転送|转发|fwd?\[\d+\])\s*[:：]",
    re.IGNORECASE,
)
_REPLY_SUBJECT = linear.compile(
    r"^\s*(?:re|aw|antw|sv|r|返信|回复)(?:\[\d+\])?\s*[:：]", re.IGNORECASE
)
MAX_NESTING = 10


@dataclass(frozen=True, slots=True)
class OriginalMessage:
    """The forwarded original, as far as it can be read."""

    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    subject: str
    text: str
    message_id: str | None = None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class ForwardResult:
    """``status``: ``not_forward``, ``extracted`` or ``unreadable``."""

    status: str
    original: OriginalMessage | None = None
    layout: str | None = None  # "attached", "banner", "header_block"


def is_forward_subject(subject: str) -> bool:
    return bool(_FWD_SUBJECT.match(subject))


def extract_forward(pm: ParsedMessage) -> ForwardResult:
    """The original message of a forward, from an attached message or the inline block."""
    if pm.attached_messages:
        return _from_attached(pm.attached_messages[0], 0)
    return extract_forward_text(pm.text, pm.subject, pm.date_utcoffset)


def _from_attached(raw: bytes, depth: int) -> ForwardResult:
    from shared.mail.parse import parse_message

    inner = parse_message(raw)
    if depth < MAX_NESTING:
        if inner.attached_messages and is_forward_subject(inner.subject):
            return _from_attached(inner.attached_messages[0], depth + 1)
        nested = extract_forward_text(inner.text, inner.subject, inner.date_utcoffset)
        if nested.status == "extracted" and is_forward_subject(inner.subject):
            return nested
    if inner.from_ is None:
        return ForwardResult("unreadable", None, "attached")
    original = OriginalMessage(
        from_=inner.from_,
        to=inner.to,
        cc=inner.cc,
        date=inner.date,
        subject=inner.subject,
        text=inner.text,
        message_id=inner.message_id,
        raw=raw,
    )
    return ForwardResult("extracted", original, "attached")


def extract_forward_text(
    body: str, subject: str = "", tz: timedelta | tzinfo | None = None
) -> ForwardResult:
    """Extract the innermost forwarded original from a plain-text body fragment."""
    offset = _offset(tz)
    lines = split_lines(body[:500_000])
    blocks = find_blocks(lines)
    if not blocks:
        return ForwardResult("not_forward")
    first = blocks[0]
    if not first.forward_banner and _REPLY_SUBJECT.match(subject):
        # An Outlook-style "From:/Sent:" block under a reply subject is quoted history.
        return ForwardResult("not_forward")
    chosen_index = 0
    for index in range(1, len(blocks)):
        current = blocks[chosen_index]
        nxt = blocks[index]
        if nxt.forward_banner or is_forward_subject(current.fields.get("subject", "")):
            chosen_index = index
        else:
            break
    block = blocks[chosen_index]
    end = blocks[chosen_index + 1].start if chosen_index + 1 < len(blocks) else len(lines)
    return _result(block, lines, end, offset)


def _result(
    block: Block, lines: list[tuple[str, str]], end: int, offset: timedelta | None
) -> ForwardResult:
    layout = "banner" if block.banner else "header_block"
    from_value = block.fields.get("from")
    sender = parse_block_from(from_value) if from_value else None
    if sender is None:
        return ForwardResult("unreadable", None, layout)
    body_lines = [_strip_quote(q, c, block.quote) for q, c in lines[block.end : end]]
    text = "\n".join(body_lines).strip("\n").strip()
    original = OriginalMessage(
        from_=sender,
        to=parse_block_addresses(block.fields.get("to", "")),
        cc=parse_block_addresses(block.fields.get("cc", "")),
        date=parse_block_date(block.fields["date"], offset) if "date" in block.fields else None,
        subject=block.fields.get("subject", "").strip(),
        text=text,
    )
    return ForwardResult("extracted", original, layout)


def _strip_quote(quote: str, content: str, block_quote: str) -> str:
    if block_quote and quote.startswith(block_quote):
        rest = quote[len(block_quote) :]
        return (rest + " " + content) if rest else content
    return (quote + " " + content) if quote else content


def _offset(tz: timedelta | tzinfo | None) -> timedelta | None:
    if tz is None or isinstance(tz, timedelta):
        return tz
    return tz.utcoffset(None)

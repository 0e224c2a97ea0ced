"""Parse raw message bytes once into an immutable :class:`ParsedMessage`.

``parse_message`` never raises on any input and does bounded work: the MIME walk is capped
(depth, parts), recipients are capped, bodies are capped. Problems are recorded in
``defects`` (stdlib parser defects in snake_case plus our own: ``nul_bytes``,
``invalid_base64``, ``mime_depth_limit``, ``mime_part_limit``, ``recipient_limit``, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message

from shared.mail.addresses import parse_address_list
from shared.mail.attachments import extract_attachments
from shared.mail.body import extract_body
from shared.mail.bounces import bounce_info, is_dsn
from shared.mail.classify import classify, is_noreply_address
from shared.mail.dates import parse_date
from shared.mail.headers import decode_header_value
from shared.mail.ids import clean_message_id, parse_references
from shared.mail.internals import header_list, stored_payload
from shared.mail.mime import Leaf, parse_tree, walk
from shared.mail.model import Address, Attachment, BounceInfo
from shared.mail.quotes import make_snippet
from shared.mail.serialize import part_bytes

MAX_RECIPIENTS = 1000
MAX_HEADER_OCCURRENCES = 200


@dataclass(frozen=True, slots=True, eq=False)
class ParsedMessage:
    """Everything inboxlog needs to know about one message. Immutable; keeps ``raw``."""

    raw: bytes
    from_: Address | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    delivered_to: tuple[Address, ...]
    subject: str
    date: datetime | None
    date_utcoffset: timedelta | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    html: str | None
    snippet: str
    attachments: tuple[Attachment, ...]
    kind: str
    bounce: BounceInfo | None
    defects: tuple[str, ...]
    attached_messages: tuple[bytes, ...]  # top-level message/rfc822 parts, serialized
    _headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> tuple[str, ...]:
        """Decoded values of every occurrence of header ``name`` (case-insensitive), in order."""
        key = name.lower()
        return tuple(decode_header_value(v) for k, v in self._headers if k == key)

    def header_names(self) -> tuple[str, ...]:
        """Lowercased names of all header fields, in order (with repeats)."""
        return tuple(k for k, _ in self._headers)

    @property
    def is_noreply_sender(self) -> bool:
        """From is a no-reply, mailer-daemon or postmaster style address."""
        return is_noreply_address(self.from_)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` (never raises; see the module docstring for the bounds)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(str(raw), "utf-8", "surrogateescape")
    raw = bytes(raw)
    defects: list[str] = []
    if b"\x00" in raw:
        defects.append("nul_bytes")
    root = parse_tree(raw, defects)
    leaves = walk(root, defects)
    headers = _headers(root)

    def first(name: str) -> str | None:
        for k, v in headers:
            if k == name:
                return v
        return None

    def all_of(name: str) -> list[str]:
        return [v for k, v in headers if k == name]

    budget = [MAX_RECIPIENTS]

    def addresses(*names: str) -> tuple[Address, ...]:
        out: list[Address] = []
        for name in names:
            for value in all_of(name):
                found = parse_address_list(value, limit=budget[0] + 1)
                if len(found) > budget[0]:
                    defects.append("recipient_limit")
                    found = found[: budget[0]]
                budget[0] -= len(found)
                out.extend(found)
        return tuple(out)

    from_list = parse_address_list(first("from"), limit=1)
    from_ = from_list[0] if from_list else None
    sender_list = parse_address_list(first("sender"), limit=1)
    subject = decode_header_value(first("subject"))
    date, offset = parse_date(first("date"))
    body = extract_body(leaves, defects)
    serialized: dict[int, bytes] = {}  # attached messages are serialized once
    attachments = extract_attachments(leaves, defects, serialized)
    dsn = is_dsn(root)

    def get(name: str) -> tuple[str, ...]:
        return tuple(decode_header_value(v) for v in all_of(name))

    has_calendar = any(
        leaf.content_type in ("text/calendar", "application/ics") and not leaf.in_attached
        for leaf in leaves
    )
    kind = classify(dsn=dsn, from_=from_, subject=subject, get=get, has_calendar=has_calendar)
    bounce = None
    if kind == "bounce":
        own = {a.address for a in (*from_list, *parse_address_list(first("to")))}
        bounce = bounce_info(leaves, body.text, own, defects)
    in_reply = parse_references(first("in-reply-to"))
    return ParsedMessage(
        raw=raw,
        from_=from_,
        sender=sender_list[0] if sender_list else None,
        reply_to=addresses("reply-to"),
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        delivered_to=addresses("delivered-to", "x-original-to"),
        subject=subject,
        date=date,
        date_utcoffset=offset,
        message_id=clean_message_id(first("message-id")),
        in_reply_to=in_reply[0] if in_reply else None,
        references=parse_references(first("references")),
        text=body.text,
        html=body.html,
        snippet=make_snippet(body.text),
        attachments=attachments,
        kind=kind,
        bounce=bounce,
        defects=tuple(dict.fromkeys(defects)),
        attached_messages=_attached_messages(leaves, serialized),
        _headers=headers,
    )


def _headers(root: Message) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    for name, value in header_list(root):
        key = str(name).strip().lower()
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= MAX_HEADER_OCCURRENCES:
            out.append((key, value if isinstance(value, str) else str(value)))
    return tuple(out)


def _attached_messages(leaves: list[Leaf], serialized: dict[int, bytes]) -> tuple[bytes, ...]:
    out: list[bytes] = []
    for leaf in leaves:
        if (
            leaf.content_type == "message/rfc822"
            and leaf.depth > 0
            and not leaf.in_attached
            and not leaf.in_report
        ):
            payload = stored_payload(leaf.part)
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                out.append(part_bytes(payload[0], serialized))
        if len(out) >= 5:
            break
    return tuple(out)

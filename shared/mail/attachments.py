"""Attachments as §7 of the spec defines them.

An attachment is a part with ``Content-Disposition: attachment`` or with a filename
(``filename`` per RFC 2183, RFC 2231 continuations/charsets, RFC 2047 names, or the legacy
``name`` of Content-Type) — except body alternatives, delivery-report parts (RFC 3464/6522)
and parts inside an attached message: an attached message/rfc822 counts once, as itself.
"""

from __future__ import annotations

import hashlib

from shared.mail.headers import decode_header_value
from shared.mail.internals import stored_payload
from shared.mail.mime import Leaf, decode_payload, get_param
from shared.mail.model import Attachment
from shared.mail.serialize import part_bytes

_REPORT_TYPES = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "text/rfc822-headers",
        "message/disposition-notification",
        "message/feedback-report",
    }
)
MAX_ATTACHMENTS = 500


def filename_of(leaf: Leaf) -> str | None:
    """Decoded filename, from Content-Disposition or the Content-Type ``name``."""
    name = get_param(leaf.part, "filename", header="content-disposition")
    if not name:
        name = get_param(leaf.part, "name")
    if not name:
        return None
    name = decode_header_value(name)  # RFC 2047 in parameters: wrong but ubiquitous
    return name.replace("\x00", "").strip() or None


def disposition_of(leaf: Leaf) -> str:
    value = leaf.part.get("content-disposition")
    if value is None:
        return ""
    return str(value).split(";", 1)[0].strip().lower()


def is_attachment(leaf: Leaf) -> bool:
    """§7: disposition attachment or a filename; body alternatives never are."""
    if leaf.in_attached or leaf.content_type.startswith("multipart/"):
        return False
    if leaf.in_report and leaf.content_type in _REPORT_TYPES:
        return False
    if leaf.parent_type == "multipart/alternative" and leaf.content_type.startswith("text/"):
        return False
    if leaf.content_type == "message/rfc822" and leaf.depth > 0 and not leaf.in_report:
        return True
    return disposition_of(leaf) == "attachment" or filename_of(leaf) is not None


def extract_attachments(
    leaves: list[Leaf], defects: list[str], serialized: dict[int, bytes] | None = None
) -> tuple[Attachment, ...]:
    """§7 attachments; ``serialized`` shares attached messages' bytes with the caller."""
    out: list[Attachment] = []
    for leaf in leaves:
        if leaf.depth == 0 or not is_attachment(leaf):
            continue
        if len(out) >= MAX_ATTACHMENTS:
            defects.append("attachment_limit")
            break
        if leaf.content_type.startswith("message/"):
            data = (
                part_bytes(stored_payload(leaf.part)[0], serialized)
                if _has_sub(leaf)
                else decode_payload(leaf.part, defects)
            )
        else:
            data = decode_payload(leaf.part, defects)
        inline = disposition_of(leaf) == "inline"
        out.append(
            Attachment(
                filename=filename_of(leaf),
                content_type=leaf.content_type,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                inline=inline,
            )
        )
    return tuple(out)


def _has_sub(leaf: Leaf) -> bool:
    payload = stored_payload(leaf.part)
    return isinstance(payload, list) and len(payload) > 0

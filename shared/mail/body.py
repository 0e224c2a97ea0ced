"""Choose and decode the message body: text/plain preferred, else text derived from HTML.

Body candidates are text leaves that are not attachments, not inside an attached message and
not parts of a delivery report (RFC 3464/6522): the first text/plain and first text/html win;
further inline text/plain parts of a multipart/mixed are appended (list footers, split bodies).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.mail.attachments import is_attachment
from shared.mail.charsets import decode_bytes
from shared.mail.internals import stored_payload
from shared.mail.markup import html_to_text, sanitize_html
from shared.mail.mime import Leaf, decode_payload, get_param

MAX_BODY_CHARS = 2_000_000  # text beyond this is not kept (a bomb bound, not a display limit)


@dataclass(frozen=True, slots=True)
class Body:
    text: str
    html: str | None


def decode_text_part(leaf: Leaf, defects: list[str]) -> str:
    """Decode one text leaf with its declared charset (our charset layer does the lying)."""
    cap = MAX_BODY_CHARS * 4
    # Bytes past the cap are not decoded at all (a 25 MB text part stays cheap; a NUL among
    # them is already in the defects from parse_message's check of the raw bytes) ...
    data = decode_payload(leaf.part, defects, limit=cap)
    if b"\x00" in data:
        defects.append("nul_bytes")
        if len(data) >= cap:  # ... unless NULs are dropped before the cut: then it needs all
            data = decode_payload(leaf.part, defects)
        data = data.replace(b"\x00", b"")
    text = decode_bytes(data[:cap], get_param(leaf.part, "charset"))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def extract_body(leaves: list[Leaf], defects: list[str]) -> Body:
    plain: list[str] = []
    html_src: str | None = None
    for leaf in leaves:
        if leaf.in_attached:
            continue
        ctype = leaf.content_type
        if ctype not in ("text/plain", "text/html") or is_attachment(leaf):
            continue
        if ctype == "text/plain":
            if plain and leaf.parent_type == "multipart/alternative":
                continue
            plain.append(decode_text_part(leaf, defects))
        elif html_src is None:
            html_src = decode_text_part(leaf, defects)
    if not plain and html_src is None:
        # A multipart whose boundaries never appear keeps its body as one text payload.
        for leaf in leaves:
            if leaf.content_type.startswith("multipart/") and isinstance(
                stored_payload(leaf.part), str
            ):
                plain.append(decode_text_part(leaf, defects))
                break
    html = sanitize_html(html_src) if html_src is not None else None
    if plain:
        text = "\n".join(p.strip("\n") for p in plain)
    elif html_src is not None:
        text = html_to_text(html_src)
    else:
        text = ""
    return Body(text[:MAX_BODY_CHARS], html)

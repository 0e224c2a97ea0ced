"""The bytes of one attachment, found again in the stored raw message.

A logged email keeps each attachment's metadata and the SHA-256 of its decoded content, not
the content. To serve it, the raw message is re-parsed with the same bounded MIME walk and the
part is found by that digest — the same bytes :mod:`shared.mail.attachments` hashed, whether
the attachment sits in the message itself or in an attached original (a forward's logged
email shows the original's attachments, §4).
"""

from __future__ import annotations

import hashlib

from shared.mail.internals import stored_payload
from shared.mail.mime import Leaf, decode_payload, parse_tree, walk
from shared.mail.serialize import part_bytes


def _content(leaf: Leaf, defects: list[str]) -> bytes:
    """Decoded bytes exactly as ``extract_attachments`` computes them before hashing."""
    payload = stored_payload(leaf.part)
    if leaf.content_type.startswith("message/") and isinstance(payload, list) and payload:
        return part_bytes(payload[0])
    return decode_payload(leaf.part, defects)


def find_payload(raw: bytes, sha256: str) -> bytes | None:
    """The decoded content of the part of ``raw`` whose SHA-256 is ``sha256``, or None."""
    defects: list[str] = []
    for leaf in walk(parse_tree(raw, defects), defects):
        if leaf.depth == 0 or leaf.content_type.startswith("multipart/"):
            continue
        data = _content(leaf, defects)
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
    return None

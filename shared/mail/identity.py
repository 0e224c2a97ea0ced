"""Message identity (spec §4): one logged email per message per account.

``message_identity`` = SHA-256 over the normalized Message-ID plus a fingerprint of From,
Date and Subject — so a message re-delivered through BCC, Sent-folder sync or a retry gets the
same key, while two different messages that share a broken Message-ID stay two. Without a
Message-ID, the fingerprint covers the main headers and the body text.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.mail.parse import ParsedMessage

_SEP = "\x1f"


def _fingerprint(pm: ParsedMessage) -> list[str]:
    return [
        pm.from_.address if pm.from_ else "",
        pm.date.strftime("%Y-%m-%dT%H:%M:%SZ") if pm.date else "",
        " ".join(pm.subject.split()),
    ]


def message_identity(pm: ParsedMessage) -> str:
    """Stable hex digest identifying ``pm`` (see the module docstring)."""
    if pm.message_id:
        # Message-IDs are compared case-sensitively in the local part (RFC 5322 §3.6.4) but
        # the domain part is case-insensitive.
        local, at, domain = pm.message_id.partition("@")
        parts = ["mid", local + at + domain.lower(), *_fingerprint(pm)]
    else:
        parts = [
            "nomid",
            *_fingerprint(pm),
            ",".join(a.address for a in pm.to),
            ",".join(a.address for a in pm.cc),
            pm.in_reply_to or "",
            hashlib.sha256(" ".join(pm.text.split()).encode("utf-8", "surrogatepass")).hexdigest(),
            ",".join(a.sha256 for a in pm.attachments),
        ]
    data = _SEP.join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()

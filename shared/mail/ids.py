"""Message-ID, In-Reply-To and References values (RFC 5322 §3.6.4): angle brackets and
whitespace removed, case kept (the local part of an id is case-sensitive).

An id longer than :data:`MAX_ID_LENGTH` (998, the longest line RFC 5322 §2.1.1 allows and the
width of the stored columns) is cut to that length here, where every id is produced — the
message's own Message-ID, each In-Reply-To/References entry, the id a bounce reports — so the
stored value and a later lookup of the same id by a reply agree (spec §6 Over-long values).

The two patterns are linear in the text: ``<[^<>]*>`` ends at the first ``<`` or ``>`` after
its start, so no character is read twice, and ``\\s+`` is one character class.
"""

from __future__ import annotations

import re

from shared.mail.headers import decode_raw_text

_ID = re.compile(r"<([^<>]*)>")
_WS = re.compile(r"\s+")
MAX_REFERENCES = 200
MAX_ID_LENGTH = 998


def clean_message_id(value: str | None) -> str | None:
    """``" <Abc@Example.COM> "`` → ``"Abc@Example.COM"``; None when empty."""
    if not value:
        return None
    text = decode_raw_text(str(value))
    m = _ID.search(text)
    ident = m.group(1) if m else text
    ident = _WS.sub("", ident).strip("<>")
    return ident[:MAX_ID_LENGTH] or None


def parse_references(value: str | None) -> tuple[str, ...]:
    """All ids of a References (or In-Reply-To) header, in order, duplicates dropped."""
    if not value:
        return ()
    text = decode_raw_text(str(value))
    found = [_WS.sub("", m)[:MAX_ID_LENGTH] for m in _ID.findall(text)]
    if not found:
        found = [t.strip("<>")[:MAX_ID_LENGTH] for t in text.split()]
    seen: dict[str, None] = {}
    for ident in found:
        if ident:
            seen.setdefault(ident, None)
    return tuple(seen)[-MAX_REFERENCES:]

"""Decode header field values: unfolding (RFC 5322 §2.2.3), encoded words (RFC 2047, with the
RFC 2231 §5 language suffix), and undeclared 8-bit / raw UTF-8 bytes (RFC 6532).

The stdlib parser (``compat32``) hands header values over as ``str`` whose non-ASCII bytes are
kept as surrogate escapes; :func:`header_bytes` recovers the original bytes so that our own
charset layer decides how to read them.

Unlike ``email.header.decode_header``, adjacent encoded words in the same charset are joined
*as bytes* before decoding, so a multibyte character split across two words comes out whole
(RFC 2047 §5 forbids splitting, but real clients do it).
"""

from __future__ import annotations

import base64
import binascii
import re

from shared.mail.charsets import decode_bytes

# Linear: an encoded word starts at a literal "=?" and each lazy class stops at the next "?";
# the others are single character classes or literals.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+?)\?([bBqQ])\?([^?]*?)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_NEWLINES = re.compile(r"[\r\n]+")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def header_bytes(value: str) -> bytes:
    """The original bytes of a header value produced by a ``BytesParser``."""
    if value.isascii():
        return value.encode()
    try:
        return value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def decode_raw_text(value: str) -> str:
    """Decode a header value's undeclared 8-bit bytes (UTF-8 first, then detection)."""
    if value.isascii():
        return value
    try:
        raw = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value  # already real text (a str handed in by a caller)
    return decode_bytes(raw, None)


def unfold(value: str) -> str:
    """Remove folding whitespace line breaks; stray CR/LF become one space."""
    if "\n" in value or "\r" in value:
        value = _FOLD.sub("", value)
        value = _NEWLINES.sub(" ", value)
    return value


def decode_header_value(value: str | None) -> str:
    """Fully decode one header value to text: unfolded, encoded words and raw 8-bit decoded."""
    if not value:
        return ""
    text = unfold(decode_raw_text(value))
    if "=?" in text:
        text = decode_encoded_words(text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text.strip()


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded words, joining adjacent same-charset words before decoding."""
    out: list[str] = []
    pending_charset: str | None = None
    pending: bytearray = bytearray()
    pos = 0
    last_end = -1
    for m in _ENCODED_WORD.finditer(text):
        between = text[pos : m.start()]
        # RFC 2047 §6.2: whitespace between adjacent encoded words is not displayed.
        adjacent = last_end == m.start() or (last_end >= 0 and between.strip(" \t") == "")
        if not adjacent or last_end < 0:
            if pending_charset is not None:
                out.append(decode_bytes(bytes(pending), pending_charset))
                pending_charset, pending = None, bytearray()
            out.append(between)
        charset = m.group(1).split("*", 1)[0].lower()  # RFC 2231 §5: charset*language
        data = _decode_word_payload(m.group(2), m.group(3))
        if pending_charset is not None and charset != pending_charset:
            out.append(decode_bytes(bytes(pending), pending_charset))
            pending = bytearray()
        pending_charset = charset
        pending += data
        pos = last_end = m.end()
    if pending_charset is not None:
        out.append(decode_bytes(bytes(pending), pending_charset))
    out.append(text[pos:])
    return "".join(out)


def _decode_word_payload(encoding: str, payload: str) -> bytes:
    if encoding in "bB":
        data = payload.strip().encode("ascii", "ignore")
        data = data.rstrip(b"=")
        data += b"=" * (-len(data) % 4)
        try:
            return base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            try:
                return base64.b64decode(data[: len(data) - len(data) % 4] or b"")
            except (binascii.Error, ValueError):
                return b""
    raw = payload.replace("_", " ").encode("utf-8", "surrogateescape")
    return _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)

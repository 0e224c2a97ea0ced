"""Parse the MIME tree once and walk it with bounds (RFC 2045/2046).

The tree is a stdlib ``compat32`` tree (no header registry, lenient). Well-formed mail is
split at the byte level by :mod:`shared.mail.mimesplit`, which builds the identical tree
several times faster and without holding the body as line lists; anything else goes through
the stdlib FeedParser (both build :class:`~shared.mail.params.ParamMessage` parts, whose
parameter lookups are linear), whose structural problems become defects on the message objects,
which we collect as plain strings. Values are decoded by our own header and charset layers,
never by the stdlib's guesses.

Bounds against mail bombs: MIME depth, number of parts (§6 of the spec). A part beyond a
bound is not visited and a defect is recorded.
"""

from __future__ import annotations

import binascii
import quopri
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from shared.mail.internals import stored_payload
from shared.mail.mimesplit import Unsupported, split_message
from shared.mail.params import ParamMessage

MAX_DEPTH = 20
MAX_PARTS = 500

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_NOT_ALPHABET = bytes(b for b in range(256) if b not in _B64_ALPHABET)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One visited MIME part (leaf or message/*), with where it sits in the tree."""

    part: Message
    content_type: str
    depth: int
    parent_type: str
    in_attached: bool  # inside an attached message/rfc822 (or a report's returned message)
    in_report: bool  # inside multipart/report


# Linear: literal alternatives; a field name of at most 76 characters matched from the start
# of a line; a zero-width split after each newline.
_HEADER_END = re.compile(rb"\r?\n\r?\n|\r\r")
_HEADER_LINE = re.compile(rb"^[!-9;-~]{1,76}[ \t]*:")
_LINE_SPLIT = re.compile(rb"(?<=\n)")


def repair_header_block(raw: bytes, defects: list[str]) -> bytes:
    """Drop a header line without a colon when real header fields follow it (RFC 5322 §2.2).

    The stdlib parser would otherwise take such a line as the start of the body and lose every
    header after it (Subject, Date, ...). A colon-less line *not* followed by header fields is
    left alone: that is a missing blank line, and the line really starts the body.
    """
    m = _HEADER_END.search(raw, 0, 256 * 1024)
    end = m.start() if m else min(len(raw), 256 * 1024)
    block = raw[:end]
    lines = _LINE_SPLIT.split(block)
    out: list[bytes] = []
    changed = False
    for i, line in enumerate(lines):
        if (
            i > 0
            and line.strip()
            and line[:1] not in (b" ", b"\t")
            and not _HEADER_LINE.match(line)
            and i + 1 < len(lines)
            and _HEADER_LINE.match(lines[i + 1])
        ):
            changed = True
            continue
        out.append(line)
    if not changed:
        return raw
    defects.append("header_without_colon")
    return b"".join(out) + raw[end:]


def parse_tree(raw: bytes, defects: list[str]) -> Message:
    """Parse bytes into a compat32 tree; on a parser failure, fall back to headers only.

    Well-formed mail is split at the byte level (:mod:`shared.mail.mimesplit`, same tree, much
    faster and leaner); anything else goes through the stdlib FeedParser, which records defects.
    """
    raw = repair_header_block(raw, defects)
    try:
        return split_message(raw)
    except Unsupported:
        pass
    except (RecursionError, ValueError, TypeError, AttributeError, LookupError):
        # Header helpers that fail here fail in the FeedParser too, which then records them.
        pass
    parser = BytesParser(_class=ParamMessage, policy=compat32)
    try:
        return parser.parsebytes(raw)
    except RecursionError:
        defects.append("mime_depth_limit")
    except Exception:  # the stdlib parser on hostile input; keep what the headers give
        defects.append("parse_error")
    try:
        return parser.parsebytes(raw, headersonly=True)
    except Exception:  # even the header block is unreadable: an empty message
        defects.append("parse_error")
        return ParamMessage()


def defect_name(defect: object) -> str:
    """``MissingHeaderBodySeparatorDefect`` → ``missing_header_body_separator``."""
    name = type(defect).__name__
    if name.endswith("Defect"):
        name = name[: -len("Defect")]
    return _CAMEL.sub("_", name).lower()


def walk(root: Message, defects: list[str]) -> list[Leaf]:
    """Visit parts depth-first in document order, with depth and part-count bounds."""
    out: list[Leaf] = []
    stack: list[tuple[Message, int, str, bool, bool]] = [(root, 0, "", False, False)]
    count = 0
    depth_hit = False
    while stack:
        part, depth, parent, in_attached, in_report = stack.pop()
        count += 1
        if count > MAX_PARTS:
            defects.append("mime_part_limit")
            break
        for d in part.defects:
            defects.append(defect_name(d))
        ctype = safe_content_type(part)
        out.append(Leaf(part, ctype, depth, parent, in_attached, in_report))
        payload = stored_payload(part)  # compat32 stores sub-parts as a list
        if not isinstance(payload, list):
            continue
        if depth >= MAX_DEPTH:
            if not depth_hit:
                defects.append("mime_depth_limit")
                depth_hit = True
            continue
        child_attached = in_attached or (ctype.startswith("message/") and depth > 0)
        child_report = in_report or ctype == "multipart/report"
        for child in reversed(payload):
            if isinstance(child, Message):
                stack.append((child, depth + 1, ctype, child_attached, child_report))
    return out


def safe_content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # malformed header values inside the stdlib helpers
        return "text/plain"


def get_param(part: Message, name: str, header: str = "content-type") -> str | None:
    """A header parameter as text (RFC 2231 continuations and charsets joined)."""
    try:
        value = part.get_param(name, header=header)
    except Exception:  # malformed parameter lists
        return None
    if value is None:
        return None
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
        from shared.mail.charsets import decode_bytes

        charset, _lang, text = value
        if not isinstance(text, str):
            return ""
        try:
            raw = text.encode("latin-1", "surrogateescape")
        except UnicodeEncodeError:  # the stdlib already decoded it (e.g. a bad charset label)
            return text.strip()
        return decode_bytes(raw, charset or "utf-8")
    return str(value).strip()


_ENCODED = frozenset({"base64", "quoted-printable", "x-uuencode", "uuencode", "x-uue", "uue"})


def decode_payload(part: Message, defects: list[str], limit: int | None = None) -> bytes:
    """The decoded bytes of a leaf (Content-Transfer-Encoding), lenient on bad input.

    ``limit`` lets a caller that keeps only the first ``limit`` bytes skip encoding the rest
    of an unencoded (7bit/8bit/binary) payload; the result starts with those same bytes.
    """
    payload = stored_payload(part)
    if payload is None:
        return b""
    if isinstance(payload, list):
        return b""
    if not isinstance(payload, str):
        return bytes(payload)
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64" and payload.isascii():
        return _b64(payload, defects)  # a2b_base64 reads ASCII str directly: no copy
    if limit is not None and len(payload) > limit and cte not in _ENCODED:
        # One char per byte (surrogateescape), and UTF-8 is prefix-preserving: same prefix.
        payload = payload[:limit]
    try:
        data = payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        data = payload.encode("utf-8", "surrogateescape")
    if cte == "base64":
        return _b64(data, defects)
    if cte == "quoted-printable":
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            defects.append("invalid_quoted_printable")
            return quopri.decodestring(data)
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        try:
            return bytes(part.get_payload(decode=True) or b"")
        except Exception:  # uu module on broken data
            defects.append("invalid_uuencode")
            return data
    return data


def _b64(data: bytes | str, defects: list[str]) -> bytes:
    # a2b_base64 (non-strict) skips line breaks and other non-alphabet bytes itself.
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    defects.append("invalid_base64")
    # Keep the alphabet up to the first "=", decode the whole quanta, then the padded tail
    # (a lone trailing sextet carries no full byte). Each step is one C call and at most one
    # copy, so a truncated 25 MB attachment stays within a few times its size.
    if isinstance(data, str):
        data = data.encode("ascii", "ignore")
    pad = data.find(b"=")
    clean = (data[:pad] if pad >= 0 else data).translate(None, _B64_NOT_ALPHABET)
    del data
    whole = len(clean) - len(clean) % 4
    tail = clean[whole:] if len(clean) % 4 > 1 else b""
    with memoryview(clean) as view:
        head = binascii.a2b_base64(view[:whole])
    del clean
    if not tail:
        return head
    return head + binascii.a2b_base64(tail + b"=" * (4 - len(tail)))

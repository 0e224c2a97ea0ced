"""Build the compat32 ``Message`` tree of well-formed mail by splitting bytes, not feeding lines.

The stdlib FeedParser pushes every body line through Python generators and regexes; for a
message with a large attachment that is nearly all of the parse time, and it holds the body
as lists of line strings. This splitter finds header ends and MIME boundaries (RFC 2046 §5.1.1)
with ``bytes.find``/regex searches over the raw bytes and builds the *same* tree that
``BytesParser(policy=compat32)`` builds — same header tuples, payload strings (ASCII with
surrogateescape), preamble, epilogue, default types and end-of-line trimming, including the
FeedParser's quirk of trimming whichever part it touched last.

Missing start or close boundaries (truncated mail) are handled and recorded as the same
defects. Anything else the FeedParser would flag (missing blank line, continuation first,
misplaced ``From `` lines, no boundary parameter, ...) or too unusual to be worth copying
its handling for (very deep or very wide trees, MIME structure inside delivery-status blocks)
raises :class:`Unsupported`; the caller then uses the stdlib parser, so defects are recorded
exactly as before.
"""

from __future__ import annotations

import re
from email import errors
from email.message import Message
from email.policy import compat32
from itertools import pairwise

from shared.mail.internals import header_list, set_stored_payload, stored_payload
from shared.mail.params import ParamMessage

MAX_SPLIT_DEPTH = 60  # deeper trees go to the stdlib parser (its own RecursionError handling)
MAX_SPLIT_PARTS = 2000

# Linear: each pattern is matched where a line or boundary starts, or begins with a literal.
# FeedParser's headerRE, on bytes: a field name and colon, an mbox "From " line, or a fold.
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
# The first empty line: one line ending, then a line that is only a line ending.
_BLANK_LINE = re.compile(rb"(\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_BOUNDARY_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)")
_EOL_AT_END = re.compile(r"(\r\n|\r|\n)\Z")


class Unsupported(Exception):
    """The input needs the stdlib FeedParser's handling (a defect or a special case)."""


class _Splitter:
    __slots__ = ("count", "last", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.last: Message | None = None  # FeedParser._last: the part it touched last
        self.count = 0

    def part(self, start: int, end: int, parent: Message | None, depth: int) -> Message:
        """Parse raw[start:end] (a whole part, headers and body) into a new Message."""
        self.count += 1
        if self.count > MAX_SPLIT_PARTS or depth > MAX_SPLIT_DEPTH:
            raise Unsupported
        msg = ParamMessage(policy=compat32)
        # FeedParser tests the parent's truth value, i.e. that it has headers.
        if parent is not None and len(parent) and parent.get_content_type() == "multipart/digest":
            msg.set_default_type("message/rfc822")
        if parent is not None:
            parent.attach(msg)
        self.last = msg
        body = self._headers(msg, start, end)
        ctype = msg.get_content_type()
        maintype = ctype.split("/", 1)[0]
        if ctype == "message/delivery-status":
            self._header_blocks(msg, body, end, depth)
        elif maintype == "message":
            self.part(body, end, msg, depth + 1)
        elif maintype == "multipart":
            self._multipart(msg, body, end, depth)
        else:
            set_stored_payload(msg, _text(self.raw, body, end))
        return msg

    def _headers(self, msg: Message, start: int, end: int) -> int:
        """Set the header fields of ``msg``; return where its body starts."""
        raw = self.raw
        if start >= end:
            return end
        first = raw[start]
        if first == 13 or first == 10:  # an empty line straight away: no header fields
            return start + (2 if raw.startswith(b"\r\n", start) else 1)
        m = _BLANK_LINE.search(raw, start, end)
        head_end, body = (m.end(1), m.end()) if m else (end, end)
        lines = raw[start:head_end].splitlines(keepends=True)
        value: list[str] = []
        for lineno, bline in enumerate(lines):
            if not _HEADER_LINE.match(bline):
                raise Unsupported  # MissingHeaderBodySeparatorDefect
            line = bline.decode("ascii", "surrogateescape")
            if line[0] in " \t":
                if not value:
                    raise Unsupported  # FirstHeaderLineIsContinuationDefect
                value.append(line)
                continue
            if value:
                header_list(msg).append(compat32.header_source_parse(value))
                value = []
            if line.startswith("From "):
                if lineno:
                    raise Unsupported  # MisplacedEnvelopeHeaderDefect
                eol = _EOL_AT_END.search(line)
                msg.set_unixfrom(line[: eol.start()] if eol else line)
                continue
            if line.find(":") <= 0:
                raise Unsupported  # InvalidHeaderDefect ("Missing header name.")
            value = [line]
        if value:
            header_list(msg).append(compat32.header_source_parse(value))
        return body

    def _header_blocks(self, msg: Message, start: int, end: int, depth: int) -> None:
        """RFC 3464 status fields: one sub-message per block of fields, as the FeedParser does.

        Each block ends at the next empty line; that line is consumed, and a following empty
        line starts an (empty) block of its own.
        """
        raw = self.raw
        pos = start
        while True:
            if pos < end and raw[pos] in (10, 13):
                block_end = pos
            else:
                m = _BLANK_LINE.search(raw, pos, end)
                block_end = m.end(1) if m else end
            block = self.part(pos, block_end, msg, depth + 1)
            if block.get_content_maintype() in ("message", "multipart"):
                raise Unsupported  # nested structure inside a status block
            if block_end >= end:
                return
            pos = block_end + (2 if raw.startswith(b"\r\n", block_end) else 1)
            if pos >= end:
                return

    def _multipart(self, msg: Message, start: int, end: int, depth: int) -> None:
        boundary = msg.get_boundary()
        if boundary is None:
            raise Unsupported  # NoBoundaryInMultipartDefect
        cte = str(msg.get("content-transfer-encoding", "8bit")).lower()
        if cte not in ("7bit", "8bit", "binary"):
            raise Unsupported  # InvalidMultipartContentTransferEncodingDefect
        try:
            sep = b"--" + boundary.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            raise Unsupported from None
        marks = self._boundaries(sep, start, end)
        if not marks or marks[0][2]:
            # No separator line: the body stays one text payload, anything after a close
            # line is dropped, and the multipart gets no parts.
            set_stored_payload(msg, _text(self.raw, start, marks[0][0] if marks else end))
            msg.epilogue = ""
            msg.defects.append(errors.StartBoundaryNotFoundDefect())
            return
        closed = marks[-1][2]
        if not closed:  # truncated mail: the last part runs to the end of this segment
            marks.append((end, end, False))
        first = marks[0][0]
        if first > start:
            msg.preamble = _strip_eol(_text(self.raw, start, first))
        for (_, part_start, _), (next_start, _, _) in pairwise(marks):
            if next_start == part_start < end:
                raise Unsupported  # back-to-back boundary lines: FeedParser skips them
            self.part(part_start, next_start, msg, depth + 1)
            self._trim_last()
            self.last = msg  # FeedParser: ``self._last = self._cur`` after each part
        if closed:
            msg.epilogue = _text(self.raw, marks[-1][1], end)
        else:
            msg.defects.append(errors.CloseBoundaryNotFoundDefect())

    def _boundaries(self, sep: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
        """(line start, line end, is close) of each boundary line, up to the close line."""
        raw = self.raw
        out: list[tuple[int, int, bool]] = []
        pos = start
        while True:
            idx = raw.find(sep, pos, end)
            if idx < 0:
                return out
            if idx == start or raw[idx - 1] in (10, 13):
                m = _BOUNDARY_TAIL.match(raw, idx + len(sep), end)
                if m:
                    close = m.group(1) is not None
                    out.append((idx, m.end(), close))
                    if close:
                        return out
                    pos = m.end()
                    continue
            pos = idx + 1

    def _trim_last(self) -> None:
        """FeedParser drops the line ending before a boundary from the last created part."""
        last = self.last
        if last is None:
            return
        if last.get_content_maintype() == "multipart":
            epilogue = last.epilogue
            if epilogue == "":
                last.epilogue = None
            elif epilogue is not None:
                last.epilogue = _strip_eol(epilogue)
        elif isinstance(stored_payload(last), str):
            set_stored_payload(last, _strip_eol(stored_payload(last)))


def _text(raw: bytes, start: int, end: int) -> str:
    # Decoding through a memoryview avoids copying a large payload's bytes first.
    with memoryview(raw) as view:
        return str(view[start:end], "ascii", "surrogateescape")


def _strip_eol(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


def split_message(raw: bytes) -> Message:
    """The compat32 tree of ``raw``; raises :class:`Unsupported` when the stdlib must parse it."""
    root = _Splitter(raw).part(0, len(raw), None, 0)
    if root.get_content_maintype() == "multipart" and not root.is_multipart():
        root.defects.append(errors.MultipartInvariantViolationDefect())  # FeedParser.close()
    return root

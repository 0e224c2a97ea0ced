"""Reading the DATA section of an SMTP transaction in bulk.

aiosmtpd reads DATA one line at a time — an await, a log call and a few list operations for each
line of the message — which was about a fifth of the gateway's CPU. Here the end of the data
(``<CRLF>.<CRLF>``, RFC 5321 4.1.1.4) is searched for over the whole buffer at C speed, and the
content is transparency-decoded (4.5.2) in one pass, with aiosmtpd's outcomes: the same bytes,
``552`` past the size limit and ``500`` for a line over the line limit, both only once the client
has sent the whole section (4.2.5), holding no more than the limit in memory.

The one subtlety is the very beginning: the CRLF before a terminator that opens the section was
the DATA command's own, already consumed. So lines are read one by one while they start with
``.`` or ``\\r`` (a terminator, a dot-stuffed line, or a CR that may begin the CRLF of an empty
line); once a line starts with anything else, every terminator that follows is preceded by its
whole CRLF in the stream, and one search finds it.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

END = b"\r\n.\r\n"
LINE_END = b"\r\n"


class Refusal(enum.Enum):
    TOO_MUCH = "552 Error: Too much mail data"
    TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


@dataclass
class _Section:
    """The section's bytes as sent (dot-stuffed, without the terminator), within the limits."""

    size_limit: int | None
    line_limit: int
    raw: bytearray
    size: int = 0
    too_long: bool = False

    def keep(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size_limit and self.size > self.size_limit:
            self.raw.clear()  # refused already: hold nothing more
        else:
            self.raw += chunk

    def refusal(self) -> Refusal | None:
        if self.size_limit and self.size > self.size_limit:
            return Refusal.TOO_MUCH
        if self.too_long or (
            self.size > self.line_limit and _longest_line(self.raw) > self.line_limit
        ):
            return Refusal.TOO_LONG
        return None


def _longest_line(raw: bytearray) -> int:
    """The longest line with its CRLF (as aiosmtpd measures it)."""
    return max(len(line) for line in raw.split(LINE_END)) + len(LINE_END)


async def _finish_line(
    reader: asyncio.StreamReader, section: _Section, head: bytes
) -> bytes | None:
    """The line begun with ``head``, with its CRLF; None for a line over the reader's limit,
    which is drained into the section and marked too long."""
    while head.endswith(b"\r"):  # its LF may come next, which readuntil would skip past
        head += await reader.readexactly(1)
        if head.endswith(LINE_END):
            return head
    try:
        return head + await reader.readuntil(LINE_END)
    except asyncio.LimitOverrunError as exc:
        section.too_long = True
        section.keep(head + await reader.readexactly(exc.consumed))
    while True:
        # What the reader leaves after an overrun never splits a CRLF (asyncio's readuntil).
        try:
            section.keep(await reader.readuntil(LINE_END))
            return None
        except asyncio.LimitOverrunError as exc:
            section.keep(await reader.readexactly(exc.consumed))


async def read_data(
    reader: asyncio.StreamReader, *, size_limit: int | None, line_limit: int
) -> bytes | Refusal:
    """The message after ``354``, up to and including the terminator: its content, or why it is
    refused. Raises ``asyncio.IncompleteReadError`` when the client goes away mid-section."""
    section = _Section(size_limit, line_limit, bytearray())
    while True:  # at the start of a line
        first = await reader.readexactly(1)
        if first not in (b".", b"\r"):
            section.keep(first)
            break
        line = await _finish_line(reader, section, first)
        if line is None:
            continue
        if line == b".\r\n":
            return section.refusal() or unstuff(section.raw)
        if len(line) > line_limit:
            section.too_long = True
        section.keep(line)
    while True:
        try:
            chunk = await reader.readuntil(END)
        except asyncio.LimitOverrunError as exc:
            # No terminator within the reader's limit: take what precedes any partial one.
            section.keep(await reader.readexactly(exc.consumed))
            continue
        section.keep(chunk[: len(LINE_END) - len(END)])
        break
    return section.refusal() or unstuff(section.raw)


def unstuff(raw: bytearray) -> bytes:
    """RFC 5321 4.5.2: a line's leading period is removed."""
    content = bytes(raw.replace(b"\r\n.", b"\r\n"))
    return content[1:] if content.startswith(b".") else content

"""``UID FETCH … (BODY.PEEK[])`` and ``(RFC822.SIZE)`` read straight off the connection's stream.

Downloading whole messages is the poller's hot loop. imaplib, and imapclient's tokenizer above
it, spend about 0.1 ms of Python per message on bookkeeping around each literal — more than
storing the message costs. Here the response is read line by line with the literals taken in
one ``read`` each (measured on 10,000 13 KB messages: 0.97 s of CPU through
``IMAPClient.fetch``, 0.05 s here). Only this one command bypasses imapclient, on the same
connection, with the same socket timeouts — with its size-only twin, which tells the poller
what it may download (§6 Bounded); everything else (login, EXAMINE, SEARCH, STATUS, IDLE)
stays on imapclient. The command is sent with the documented ``IMAP4.send`` /
``readline`` / ``read`` of the imaplib object imapclient wraps.

Read-only by construction: BODY.PEEK never sets \\Seen (RFC 3501 6.4.5).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

_tags = itertools.count(1)
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_UID = re.compile(rb"[( ]UID (\d+)[ )]")
_BODY_BEFORE_LITERAL = re.compile(rb"BODY\[\] \{\d+\}\r\n$")
_SIZE = re.compile(rb"[( ]RFC822\.SIZE (\d+)[ )]")
_CHUNK = 1 << 20  # a dropped literal is read (and forgotten) a MiB at a time
_SMALL_LITERAL = 1 << 16  # a size-only FETCH has no business sending large literals

Reader = Callable[[int], bytes]


def uid_set(uids: Iterable[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` → ``"1:3,7,9:10"``: a short command line for any batch."""
    parts: list[str] = []
    run: list[int] = []
    for uid in sorted(set(uids)):
        if run and uid == run[-1] + 1:
            run.append(uid)
            continue
        if run:
            parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [uid]
    if run:
        parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


@dataclass
class FetchResult:
    """What one ``UID FETCH`` returned: bodies by UID, and the UIDs whose body was larger than
    the caller's bound (read off the wire in chunks and dropped, with the size the server
    sent)."""

    bodies: dict[int, bytes] = field(default_factory=dict)
    oversized: dict[int, int] = field(default_factory=dict)


def _send(client: IMAPClient, command: bytes) -> tuple[Callable[[], bytes], Reader, bytes]:
    imap = client._imap  # the imaplib.IMAP4 connection imapclient drives
    tag = b"ilf%d" % next(_tags)
    imap.send(tag + b" " + command + b"\r\n")

    def read(n: int) -> bytes:
        data: bytes = imap.read(n)
        if len(data) != n:
            raise IMAPClientAbortError("connection closed in the middle of a message")
        return data

    return imap.readline, read, tag


def fetch_bodies(
    client: IMAPClient, uids: list[int], *, max_bytes: int | None = None
) -> FetchResult:
    """The raw bytes of each message in ``uids`` that still exists, by UID; a body larger than
    ``max_bytes`` (a server that announced a smaller RFC822.SIZE) is dropped, not kept."""
    if not uids:
        return FetchResult()
    readline, read, tag = _send(
        client, b"UID FETCH " + uid_set(uids).encode() + b" (UID BODY.PEEK[])"
    )
    return read_fetch_response(readline, read, tag, wanted=set(uids), max_bytes=max_bytes)


def fetch_sizes(client: IMAPClient, uids: list[int]) -> dict[int, int]:
    """``RFC822.SIZE`` of each message in ``uids`` that still exists, by UID (nothing is
    downloaded: the poller decides from these what it may fetch)."""
    if not uids:
        return {}
    readline, read, tag = _send(
        client, b"UID FETCH " + uid_set(uids).encode() + b" (UID RFC822.SIZE)"
    )
    sizes: dict[int, int] = {}
    wanted = set(uids)
    for text, _body, _dropped in _responses(readline, read, tag, max_bytes=_SMALL_LITERAL):
        if b" FETCH (" not in text[:40]:
            continue
        uid, size = _UID.search(text), _SIZE.search(text)
        if uid is not None and size is not None and int(uid.group(1)) in wanted:
            sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


def read_fetch_response(
    readline: Callable[[], bytes],
    read: Reader,
    tag: bytes,
    *,
    wanted: set[int],
    max_bytes: int | None = None,
) -> FetchResult:
    """Read untagged responses up to ``tag``'s completion; keep each FETCH's ``BODY[]``.

    Any other untagged response the server slips in (EXISTS, EXPUNGE, a flag change of another
    session) is read whole — literals included — and ignored. Items may come in any order.
    """
    result = FetchResult()
    for text, body, dropped in _responses(readline, read, tag, max_bytes=max_bytes):
        if (body is None and dropped is None) or b" FETCH (" not in text[:40]:
            continue  # not a message body: EXISTS, EXPUNGE, FLAGS, BODY[] NIL (expunged)…
        uid = _UID.search(text)
        if uid is None or int(uid.group(1)) not in wanted:
            continue
        if body is not None:
            result.bodies[int(uid.group(1))] = body
        elif dropped is not None:
            result.oversized[int(uid.group(1))] = dropped
    return result


def _responses(
    readline: Callable[[], bytes], read: Reader, tag: bytes, *, max_bytes: int | None
) -> Iterator[tuple[bytes, bytes | None, int | None]]:
    """Each untagged response up to ``tag``'s completion, as (its protocol text without the
    literals, its ``BODY[]`` literal or None, the size of a ``BODY[]`` literal dropped for
    exceeding ``max_bytes`` or None). Memory stays bounded by ``max_bytes`` whatever a server
    sends: a larger literal, anywhere, is read in chunks and dropped."""
    while True:
        line = readline()
        if not line:
            raise IMAPClientAbortError("connection closed during FETCH")
        if line.startswith(tag + b" "):
            status = line[len(tag) + 1 :].split(None, 1)
            if not status or status[0].upper() != b"OK":
                raise IMAPClientError(f"FETCH failed: {line[len(tag) + 1 :].strip()[:200]!r}")
            return
        if line.startswith(b"* BYE"):
            raise IMAPClientAbortError("server closed the connection (BYE)")
        text, body, dropped = line, None, None
        while m := _LITERAL.search(line):
            size = int(m.group(1))
            is_body = _BODY_BEFORE_LITERAL.search(line) is not None
            if max_bytes is not None and size > max_bytes:
                _discard(read, size)
                if is_body:
                    dropped = size
            else:
                literal = read(size)
                if is_body:
                    body = literal
            line = readline()
            if not line:
                raise IMAPClientAbortError("connection closed during FETCH")
            text += line
        yield text, body, dropped


def _discard(read: Reader, size: int) -> None:
    while size > 0:
        n = min(size, _CHUNK)
        read(n)
        size -= n

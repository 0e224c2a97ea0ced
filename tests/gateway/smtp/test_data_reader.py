"""The bulk DATA reader (gateway/smtp/data.py) against a line-by-line reading of RFC 5321 — the
way aiosmtpd reads — over awkward sections arriving in awkward pieces, and at its limits; and the
fast MAIL/RCPT path parsing against aiosmtpd's own parser."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from collections.abc import Callable
from functools import partial

import pytest
from aiosmtpd.smtp import SMTP

from gateway.smtp.data import Refusal, read_data
from gateway.smtp.server import _SIMPLE_PATH, IntakeSMTP

AFTER = b"QUIT\r\n"  # what the client pipelines after the terminator: never read as data


def line_by_line(
    stream: bytes, *, size_limit: int | None, line_limit: int
) -> tuple[bytes | Refusal, bytes]:
    """The reference: lines up to CRLF until a lone ".", each measured with its CRLF, the size
    counted before transparency is undone; over the size limit wins over a long line. With what
    follows the terminator."""
    lines, size, too_long, pos = [], 0, False, 0
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line, pos = stream[pos:end], end
        if line == b".\r\n":
            break
        size += len(line)
        too_long |= len(line) > line_limit
        lines.append(line[1:] if line.startswith(b".") else line)
    if size_limit and size > size_limit:
        return Refusal.TOO_MUCH, stream[pos:]
    return (Refusal.TOO_LONG if too_long else b"".join(lines)), stream[pos:]


async def bulk(
    stream: bytes, pieces: list[int], *, reader_limit: int, size_limit: int | None, line_limit: int
) -> tuple[bytes | Refusal, bytes]:
    """Our reader's result and what it left in the stream, the stream fed in ``pieces``."""
    reader = asyncio.StreamReader(limit=reader_limit)

    async def feed() -> None:
        pos = 0
        for size in pieces:
            reader.feed_data(stream[pos : pos + size])
            pos += size
            await asyncio.sleep(0)
        reader.feed_data(stream[pos:])
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    result = await read_data(reader, size_limit=size_limit, line_limit=line_limit)
    await feeding
    return result, await reader.read()


# Line shapes that matter: empty, lone or leading dots (transparency), CRs and LFs that are not
# line ends, text that looks like the terminator without being one, and long lines.
SHAPES = [b"", b".", b"..", b"...", b".x", b"\r", b"\r\r", b"\n", b"x\r", b".\r", b"\n.", b"x",
          b"From: a@b", b"hello . world", b"\r.\n", b"a" * 40, b"." + b"b" * 60]  # fmt: skip


def section(rng: random.Random) -> bytes:
    lines = [rng.choice(SHAPES) for _ in range(rng.randrange(0, 12))]
    return b"".join(line + b"\r\n" for line in lines) + b".\r\n"


@pytest.mark.parametrize("seed", range(400))
def test_bulk_reading_equals_line_by_line_reading(seed: int) -> None:
    rng = random.Random(seed)
    data = section(rng)
    stream = data + AFTER
    pieces = [rng.randrange(1, 9) for _ in range(rng.randrange(0, 30))]
    # Small limits, so overruns of the reader and of both limits happen often.
    line_limit = rng.choice([30, 50, 1000])
    size_limit = rng.choice([None, 100, 200, 10_000])
    got, left = asyncio.run(
        bulk(stream, pieces, reader_limit=line_limit, size_limit=size_limit, line_limit=line_limit)
    )
    # The same content, and the first terminator found exactly: not a byte read past it.
    assert (got, left) == line_by_line(stream, size_limit=size_limit, line_limit=line_limit), data


def read(stream: bytes, *, size_limit: int | None = None, line_limit: int = 1000) -> object:
    return asyncio.run(
        bulk(
            stream + AFTER,
            [],
            reader_limit=line_limit,
            size_limit=size_limit,
            line_limit=line_limit,
        )
    )[0]


def test_transparency_is_undone_and_the_terminator_ends_the_section() -> None:
    assert read(b".\r\n") == b""
    assert read(b"\r\n.\r\n") == b"\r\n"
    assert read(b"..\r\n.\r\n") == b".\r\n"
    assert read(b"a\r\n..b\r\n...\r\n.\r\n") == b"a\r\n.b\r\n..\r\n"
    # A terminator that begins right after an empty line or a bare CR is still found.
    assert read(b"\r\r\n.\r\n") == b"\r\r\n"
    assert read(b"x\r\n.x\r\n\r\n.\r\n") == b"x\r\nx\r\n\r\n"


def test_the_size_limit_holds_at_its_bound() -> None:
    body = b"x" * 98 + b"\r\n"  # 100 bytes
    assert read(body + b".\r\n", size_limit=100) == body
    assert read(b"." + body + b".\r\n", size_limit=100) == Refusal.TOO_MUCH  # counted stuffed
    assert read(body * 3 + b".\r\n", size_limit=100) == Refusal.TOO_MUCH


def test_the_line_limit_holds_at_its_bound_with_crlf_in_the_count() -> None:
    limit = 64
    assert read(b"y" * (limit - 2) + b"\r\n.\r\n", line_limit=limit) == b"y" * (limit - 2) + b"\r\n"
    assert read(b"y" * (limit - 1) + b"\r\n.\r\n", line_limit=limit) == Refusal.TOO_LONG
    # A long line far beyond the reader's limit is drained, however it is split, then refused.
    assert read(b"ok\r\n" + b"z" * 10 * limit + b"\r\n.\r\n", line_limit=limit) == Refusal.TOO_LONG
    assert read(b"." + b"z" * 10 * limit + b"\r\n.\r\n", line_limit=limit) == Refusal.TOO_LONG


def test_a_section_over_the_size_limit_is_not_held_in_memory() -> None:
    """A client sending far more than the limit costs about the limit in memory, not what it
    sends: 5 MB against a 100 KB limit."""
    chunk = b"w" * 998 + b"\r\n"

    async def run() -> bytes | Refusal:
        reader = asyncio.StreamReader(limit=4096)

        async def feed() -> None:
            for _ in range(5000):
                reader.feed_data(chunk)
                await asyncio.sleep(0)
            reader.feed_data(b".\r\n")

        feeding = asyncio.create_task(feed())
        result = await read_data(reader, size_limit=100_000, line_limit=4096)
        await feeding
        return result

    tracemalloc.start()
    try:
        assert asyncio.run(run()) == Refusal.TOO_MUCH
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_a_client_gone_mid_section_is_an_incomplete_read() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader(limit=1000)
        reader.feed_data(b"From: a@b\r\n\r\nhalf a mess")
        reader.feed_eof()
        await read_data(reader, size_limit=None, line_limit=1000)

    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(run())


PATHS = [
    "<a@b>", "<alice@ours.example>", "<A+B.c@EX-1.com> SIZE=10240", "<a@b>  SIZE=1 BODY=8BITMIME",
    "<a@b>\tSIZE=1", "<a@b>SIZE=1", "<a@b> (comment) SIZE=1", "<>", "<a..b@c>", "<.a@c>",
    "<a.@c>", "<a@[1.2.3.4]>", "<a@b.>", "<a@b> ", '<"q x"@b>', "<a@b> x y", " <a@b>",
    "a@b", "<a@b", "<a@b>>", "<@relay:a@b>", "<ü@b.example>", "<a@b\u00e9.example>", "<a b@c>",
]  # fmt: skip


def outcome(parse: Callable[[str], object], arg: str) -> object:
    """What parsing gives, an exception included (aiosmtpd's parser raises IndexError on "<")."""
    try:
        return parse(arg)
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize("arg", PATHS)
def test_fast_path_parsing_agrees_with_aiosmtpd(arg: str) -> None:
    protocol = IntakeSMTP.__new__(IntakeSMTP)  # only _getaddr's class attributes are read
    assert outcome(protocol._getaddr, arg) == outcome(partial(SMTP._getaddr, protocol), arg)


def test_fast_path_parsing_agrees_on_random_paths() -> None:
    """Paths near the common form, with a random part of them awkward."""
    rng = random.Random(7)
    piece = 'ab.-+!~=_ \t()"[]<>@:,;ü'
    protocol = IntakeSMTP.__new__(IntakeSMTP)
    ours, theirs = protocol._getaddr, partial(SMTP._getaddr, protocol)
    fast = 0
    for _ in range(20_000):
        parts = ["<", "ab", "@", "c.d", ">", " ", "SIZE=1"]
        for _ in range(rng.randrange(0, 3)):
            k = rng.randrange(len(parts))
            parts[k] = "".join(rng.choice(piece) for _ in range(rng.randrange(0, 4)))
        arg = "".join(parts)
        fast += _SIMPLE_PATH.match(arg) is not None
        assert outcome(ours, arg) == outcome(theirs, arg), arg
    assert fast > 5000  # the fast path was taken often enough to mean something

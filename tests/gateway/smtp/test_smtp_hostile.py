"""Hostile SMTP clients (§6): idle and trickling clients are dropped, connections per client are
bounded, and garbage of any shape gets well-formed error replies without hurting the gateway.

Findings about the idle timeout (aiosmtpd 1.4, ``smtp_idle_timeout``): aiosmtpd re-arms the
timer only when a *command completes*, so a stalled partial command is dropped after the
timeout. The gateway adds one thing during DATA (gateway/smtp/server.py): every 16 KiB received
re-arms it, up to a 10-minute deadline, so a big message on a slow but honest link is not cut
off — while a client trickling a byte at a time is still dropped after one timeout. The drop is
a plain close, with no 421 reply first.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.db.engine import make_engine, make_session_factory
from shared.db.models import StoredMessage
from tests.conftest import make_settings
from tests.e2e.mail import message
from tests.support.inproc_gateway import InProcessGateway
from tests.support.world import World, new_world

REPLY = re.compile(rb"[2-5]\d\d(?:[ -].*)?")
ENHANCED = re.compile(rb"([245])\d\d[ -]([245])\.\d{1,3}\.\d{1,3}(?: .*)?")
VERBS = {
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
    "STARTTLS", "AUTH",
}  # fmt: skip


@pytest.fixture(scope="module")
def pg_sessions(postgresql_url: str):  # type: ignore[no-untyped-def]
    return make_session_factory(make_engine(postgresql_url))


@pytest.fixture
def world(pg_sessions) -> World:  # type: ignore[no-untyped-def]
    return new_world(pg_sessions)


def start(postgresql_url: str, tmp_path: Path, sessions, **over) -> InProcessGateway:  # type: ignore[no-untyped-def]
    over.setdefault("smtp_rate_per_minute", 1_000_000)
    over.setdefault("smtp_account_rate_per_minute", 1_000_000)
    return InProcessGateway(make_settings(postgresql_url, tmp_path, **over), sessions, sender=None)


@pytest.fixture
def gw(postgresql_url: str, tmp_path: Path, pg_sessions) -> Iterator[InProcessGateway]:  # type: ignore[no-untyped-def]
    g = start(postgresql_url, tmp_path, pg_sessions, smtp_idle_timeout=15.0)
    yield g
    g.close()


class Client:
    """A raw SMTP client socket: send bytes, read reply lines."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes | None:
        """One reply line, or None at EOF."""
        while b"\r\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> list[bytes]:
        """One complete (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.line()
            assert line is not None, f"connection closed mid-reply after {lines}"
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    def until_eof(self) -> list[bytes]:
        out = []
        while (line := self.line()) is not None:
            out.append(line)
        assert self.buf == b"", f"unterminated reply bytes {self.buf!r}"
        return out

    def closed_within(self, seconds: float) -> float:
        """Seconds until the server closes the connection (fails if it stays open)."""
        t0 = time.monotonic()
        self.sock.settimeout(seconds)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            pytest.fail(f"connection still open after {seconds}s")
        except ConnectionResetError:
            pass
        return time.monotonic() - t0

    def close(self) -> None:
        self.sock.close()


def code(reply: list[bytes]) -> bytes:
    return reply[-1][:9]


def check_lines(lines: list[bytes]) -> None:
    """Every line is an SMTP reply; every 4xx/5xx carries a matching enhanced status code."""
    for line in lines:
        assert REPLY.fullmatch(line), line
        if line[:1] in b"45":
            m = ENHANCED.fullmatch(line)
            assert m and m.group(1) == m.group(2), f"no/bad enhanced status code: {line!r}"


def test_idle_client_with_partial_command_is_dropped(
    postgresql_url: str, tmp_path: Path, pg_sessions
) -> None:  # type: ignore[no-untyped-def]
    g = start(postgresql_url, tmp_path, pg_sessions, smtp_idle_timeout=1.0)
    try:
        c = Client(g.port)
        assert code(c.reply())[:3] == b"220"
        c.send(b"EHLO half-a-comm")  # no CRLF: a partial command, then silence
        elapsed = c.closed_within(6)
        assert 0.5 <= elapsed < 4, elapsed
        # A client that says nothing at all after the banner is dropped too.
        c2 = Client(g.port)
        c2.reply()
        assert c2.closed_within(6) < 4
    finally:
        g.close()


def test_trickling_data_is_bounded_by_the_timeout(
    postgresql_url: str, tmp_path: Path, pg_sessions, world: World
) -> None:  # type: ignore[no-untyped-def]
    g = start(postgresql_url, tmp_path, pg_sessions, smtp_idle_timeout=1.5)
    try:
        c = Client(g.port)
        c.reply()
        for cmd, want in (
            (b"EHLO t.example", b"250"),
            (b"MAIL FROM:<alice@ours.example>", b"250"),
            (f"RCPT TO:<{world.bcc}>".encode(), b"250"),
            (b"DATA", b"354"),
        ):
            c.send(cmd + b"\r\n")
            assert code(c.reply())[:3] == want, cmd
        # One byte every 0.2 s — far more often than the timeout — of a long body.
        t0 = time.monotonic()
        body = message("alice@ours.example", ["ken@acme.example"], body="x" * 10_000)
        closed = False
        for byte in body:
            try:
                c.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - t0 > 8:
                break
        if not closed:
            c.closed_within(3)
        assert time.monotonic() - t0 < 6, "a trickling client kept its connection"
        assert world.stored() == []
        # The gateway is unharmed.
        with smtplib.SMTP("127.0.0.1", g.port, timeout=10) as s:
            assert s.noop()[0] == 250
    finally:
        g.close()


def test_connections_per_client_are_bounded_and_freed(
    postgresql_url: str, tmp_path: Path, pg_sessions
) -> None:  # type: ignore[no-untyped-def]
    limit = 3
    g = start(postgresql_url, tmp_path, pg_sessions, smtp_max_connections_per_client=limit)
    held: list[Client] = []
    try:
        for _ in range(limit):
            held.append(Client(g.port))
            assert code(held[-1].reply())[:3] == b"220"
        extra = Client(g.port)
        lines = extra.until_eof()
        assert lines and lines[0].startswith(b"421 4.7.0 "), lines
        assert all(not line.startswith(b"220") for line in lines), lines
        # The held sessions still work.
        held[0].send(b"NOOP\r\n")
        assert code(held[0].reply())[:3] == b"250"
        # Closing one frees a slot (the server notices the close asynchronously).
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:
            c = Client(g.port)
            first = c.line()
            if first and first.startswith(b"220"):
                c.send(b"NOOP\r\n")
                assert code(c.reply())[:3] == b"250"
                c.close()
                break
            c.close()
            assert time.monotonic() < deadline, f"slot never freed: {first!r}"
            time.sleep(0.05)
    finally:
        for c in held:
            c.close()
        g.close()


def test_overlong_lines_and_invalid_commands_get_5xx_and_the_session_goes_on(
    gw: InProcessGateway,
) -> None:
    c = Client(gw.port)
    c.reply()
    cases = [
        (b"EHLO " + b"a" * 2000, b"500 5.5.2"),  # over the command limit
        (b"NOOP " + b"b" * (2 << 20), b"500 5.5.2"),  # over the 1 MiB reader limit
        (b"FROB x", b"500 5.5.1"),
        (b"", b"500 5.5.2"),
        (b"MAIL FROM:<a@b.example>", b"503 5.5.1"),  # before EHLO
        (b"EHLO c.example", b"250"),
        (b"MAIL FROM:<a@b.example> FOO=BAR", b"555 5.5.4"),
        (b"MAIL FROM:", b"501 5.5.4"),
        (b"RCPT TO:<x@y.example>", b"503 5.5.1"),
        (b"DATA", b"503 5.5.1"),
        (b"EXPN staff", b"502 5.5.1"),
        (b"STARTTLS", b"454 4.7.0"),
        (b"NOOP", b"250"),
    ]
    for line, want in cases:
        c.send(line + b"\r\n")
        reply = c.reply()
        check_lines(reply)
        assert reply[-1].startswith(want), (line[:40], reply)
    c.close()


def test_nul_and_non_utf8_in_commands_are_errors_not_crashes(gw: InProcessGateway) -> None:
    c = Client(gw.port)
    c.reply()
    for line in (b"NOOP\x00", b"\x00\x00\x00", b"\xff\xfe x", b"\xc3(", b"MAIL\x00FROM:<a@b>"):
        c.send(line + b"\r\n")
        reply = c.reply()
        check_lines(reply)
        assert reply[-1][:1] in b"5", (line, reply)
    c.send(b"QUIT\r\n")
    assert code(c.reply())[:3] == b"221"


def test_bare_lf_dot_does_not_end_data_no_smuggling(gw: InProcessGateway, world: World) -> None:
    """Only CRLF.CRLF ends DATA (RFC 5321 §4.1.1.4): a bare-LF dot cannot smuggle a second
    transaction inside the first message."""
    raw = message("alice@ours.example", ["ken@acme.example"]).replace(b"\n", b"\r\n")
    smuggled = b"\n.\nMAIL FROM:<alice@ours.example>\nRCPT TO:<" + world.bcc.encode() + b">\n"
    smuggled += b"DATA\nFrom: alice@ours.example\n\nsmuggled\n.\n"
    c = Client(gw.port)
    c.reply()
    c.send(b"EHLO s.example\r\nMAIL FROM:<alice@ours.example>\r\n")
    c.send(f"RCPT TO:<{world.bcc}>\r\nDATA\r\n".encode())
    for want in (b"250", b"250", b"250", b"354"):
        assert code(c.reply())[:3] == want
    c.send(raw + smuggled + b"\r\n.\r\n")
    assert code(c.reply())[:9] == b"250 2.0.0"
    c.send(b"QUIT\r\n")
    rest = c.until_eof()
    assert rest[0].startswith(b"221"), rest
    [row] = world.stored()
    with world.sessions() as s:
        stored = s.get(StoredMessage, row.id).raw
    assert b"smuggled" in stored


# --- fuzz ------------------------------------------------------------------------------

_addr = st.from_regex(r"[a-z0-9.]{0,12}@[a-z0-9.]{0,12}", fullmatch=True)
_junk = st.binary(min_size=0, max_size=120).map(lambda b: b.replace(b"\n", b""))
_text = st.text(min_size=0, max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass"))
_valid_line = st.one_of(
    st.builds(lambda h: b"EHLO " + h, _text),
    st.builds(lambda h: b"HELO " + h, _text),
    st.builds(lambda a: b"MAIL FROM:<" + a.encode() + b">", _addr),
    st.builds(lambda a, p: b"MAIL FROM:<" + a.encode() + b"> " + p, _addr, _junk),
    st.builds(lambda a: b"RCPT TO:<" + a.encode() + b">", _addr),
    st.just(b"DATA"),
    st.sampled_from([b"RSET", b"NOOP", b"HELP", b"VRFY x@y", b"EXPN list", b"STARTTLS", b"AUTH"]),
    st.builds(lambda v, a: v + b" " + a, st.sampled_from(sorted(v.encode() for v in VERBS)), _junk),
)


def _is_garbage(line: bytes) -> bool:
    """Not a verb the way aiosmtpd reads it (CR/LF stripped, split at the first space)."""
    token = line.rstrip(b"\r\n").split(b" ", 1)[0]
    try:
        return token.decode("utf-8").upper() not in VERBS
    except UnicodeDecodeError:
        return True


_garbage_line = st.one_of(
    _junk,
    st.binary(min_size=1000, max_size=3000),  # over the command limit
    st.builds(lambda b: b"\x00" + b, _junk),  # NULs
    st.builds(lambda n: b"X" * n, st.integers(1, 2000)),
).filter(_is_garbage)
_eol = st.sampled_from([b"\r\n", b"\n"])  # CRLF or bare LF
_line = st.tuples(st.one_of(_valid_line, _garbage_line), _eol).map(lambda t: t[0] + t[1])
_garbage_batch = st.lists(st.tuples(_garbage_line, _eol), min_size=1, max_size=4).map(
    lambda ls: b"".join(line.replace(b"\n", b"") + eol for line, eol in ls)
)
# Pipelined batches: several commands in one write, as a hostile client would.
_batch = st.lists(_line, min_size=1, max_size=12).map(b"".join)
TERMINATOR = b"\r\n.\r\nRSET\r\nQUIT\r\n"  # ends DATA if it was entered, then leaves


def session(port: int, batch: bytes) -> list[bytes]:
    c = Client(port)
    try:
        banner = c.reply()
        assert banner[-1].startswith(b"220 "), banner
        # The server may hang up early (too many bad commands): then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.send(batch + TERMINATOR)
        lines = c.until_eof()
    finally:
        c.close()
    check_lines(lines)
    return lines


def test_fuzzed_command_sequences_get_well_formed_replies_and_do_no_harm(
    gw: InProcessGateway, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    runs: list[bytes] = []

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=_batch)
    def mixed(batch: bytes) -> None:
        runs.append(batch)
        lines = session(gw.port, batch)
        assert lines, "no reply at all"

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=_garbage_batch)
    def garbage(batch: bytes) -> None:
        runs.append(batch)
        lines = session(gw.port, batch)
        # Everything before RSET/QUIT answered an invalid line: all errors.
        if lines[-2:] and [line[:3] for line in lines[-2:]] == [b"250", b"221"]:
            lines = lines[:-2]
        assert lines and all(line[:1] in b"45" for line in lines), lines

    mixed()
    garbage()
    assert len(runs) >= 300, len(runs)  # the sessions really ran
    assert sum(len(b) for b in runs) > 10_000

    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]
    # Afterwards a normal transaction still gets 250 and stores the message.
    raw = message("alice@ours.example", ["ken@acme.example"], subject="after the storm")
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as s:
        s.ehlo("ok.example")
        s.mail("alice@ours.example")
        assert s.rcpt(world.bcc)[0] == 250
        code_, msg = s.data(raw)
    assert (code_, msg[:5]) == (250, b"2.0.0")
    stored = [r for r in world.stored() if r.status == "stored"]
    with world.sessions() as db:
        assert any(b"after the storm" in (db.get(StoredMessage, r.id).raw or b"") for r in stored)


def test_a_large_message_on_a_slow_steady_link_is_not_cut_off(
    postgresql_url: str, tmp_path: Path, pg_sessions, world: World
) -> None:  # type: ignore[no-untyped-def]
    """DATA longer than one idle timeout, but with data flowing: accepted and stored."""
    g = start(postgresql_url, tmp_path, pg_sessions, smtp_idle_timeout=1.0)
    try:
        raw = message("alice@ours.example", ["ken@acme.example"], body="z" * 400_000)
        with smtplib.SMTP("127.0.0.1", g.port, timeout=30) as s:
            s.ehlo()
            s.mail("alice@ours.example")
            s.rcpt(world.bcc)
            s.putcmd("data")
            assert s.getreply()[0] == 354
            data = raw.replace(b"\n", b"\r\n")
            t0 = time.monotonic()
            for i in range(0, len(data), 20_000):  # ~20 KB every 0.15 s: 3 s in all
                s.sock.sendall(data[i : i + 20_000])
                time.sleep(0.15)
            assert time.monotonic() - t0 > 2.5  # well past the 1 s idle timeout
            s.sock.sendall(b"\r\n.\r\n")
            assert s.getreply()[0] == 250
        assert len(world.stored()) == 1
    finally:
        g.close()

"""Fault-injecting TCP proxy, and a scripted fake server, for IMAP resilience tests.

``FaultProxy`` sits on an ephemeral loopback port in front of an IMAP server (normally a
``DovecotServer``) and forwards bytes both ways, optionally misbehaving on the
server->client direction. Modes, switchable at runtime for live and new connections:

* ``pass_through()`` - forward unchanged;
* ``delay(seconds)`` - hold every server->client chunk for ``seconds`` before sending;
* ``drop_after_bytes(n)`` - forward ``n`` more server->client bytes per connection
  (counted from when the connection first sees this mode, so a new connection's budget
  includes the greeting), then cut the connection (both directions, ``reset=True`` for
  an RST instead of a FIN).

Independently of the mode, ``hide_uids(uids)`` drops every untagged FETCH response about
those UIDs (the server "lists but does not return" them), and the proxy counts the bytes it
forwarded to clients (``bytes_to_client``) and keeps the command lines clients sent
(``commands``), so tests can see what was downloaded and asked for.

``FakeImapServer`` is a scripted server for what no real server will do on request: a
non-IMAP greeting, a throttling answer to LOGIN, a connection dropped right after login.

Threads, blocking sockets, no dependencies beyond the standard library.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

HOST = "127.0.0.1"
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_UID = re.compile(rb"[( ]UID (\d+)[ )]")


@dataclass(frozen=True)
class _Mode:
    kind: str  # "pass" | "delay" | "drop"
    seconds: float = 0.0
    limit: int = 0
    reset: bool = False
    generation: int = 0


class _Link:
    """One proxied client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self._generation = -1
        self._budget = 0
        self._framing = False  # once UIDs are hidden, server data is forwarded per response
        self._pending = b""
        self._commands = b""

    def start(self) -> None:
        for target, name in ((self._client_to_server, "c2s"), (self._server_to_client, "s2c")):
            threading.Thread(target=target, name=f"imap-fault-{name}", daemon=True).start()

    def close(self, *, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy._forget(self)

    def _client_to_server(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.client.recv(65536)
                if not data:
                    break
                self._record_commands(data)
                self.upstream.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def _server_to_client(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.upstream.recv(65536)
                if not data:
                    break
                if self.proxy._hidden or self._framing:
                    self._framing = True
                    data = self._filter(data)
                    if not data:
                        continue
                if not self._forward(data):
                    return
        except OSError:
            pass
        finally:
            self.close()

    def _record_commands(self, data: bytes) -> None:
        self._commands += data
        *lines, self._commands = self._commands.split(b"\r\n")
        with self.proxy._lock:
            self.proxy.commands.extend(line[:300] for line in lines)

    def _filter(self, data: bytes) -> bytes:
        """Whole responses out of the server's stream, minus FETCH responses about hidden
        UIDs; an incomplete response waits for its rest."""
        self._pending += data
        out, pos = [], 0
        while True:
            start, text = pos, b""
            while True:
                end = self._pending.find(b"\r\n", pos)
                if end < 0:
                    self._pending = self._pending[start:]
                    return b"".join(out)
                line = self._pending[pos : end + 2]
                text += line
                pos = end + 2
                m = _LITERAL.search(line)
                if m is None:
                    break
                pos += int(m.group(1))
                if pos > len(self._pending):
                    self._pending = self._pending[start:]
                    return b"".join(out)
            hidden = self.proxy._hidden
            uid = _UID.search(text)
            if (
                text.startswith(b"* ")
                and b" FETCH (" in text[:40]
                and uid is not None
                and int(uid.group(1)) in hidden
            ):
                continue
            out.append(self._pending[start:pos])

    def _forward(self, data: bytes) -> bool:
        """Send ``data`` to the client according to the current mode; False = cut."""
        mode = self.proxy._mode
        if mode.kind == "delay":
            time.sleep(mode.seconds)
        elif mode.kind == "drop":
            if self._generation != mode.generation:
                self._generation, self._budget = mode.generation, mode.limit
            if len(data) >= self._budget:
                if self._budget:
                    self.proxy._count(self._budget)  # before sending: a reader sees it counted
                    self.client.sendall(data[: self._budget])
                self._budget = 0
                self.close(reset=mode.reset)
                return False
            self._budget -= len(data)
        self.proxy._count(len(data))
        self.client.sendall(data)
        return True


class FaultProxy:
    """TCP proxy on 127.0.0.1:<ephemeral> in front of ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._mode = _Mode("pass")
        self._generation = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.bytes_to_client = 0  # forwarded server->client, all connections
        self.commands: list[bytes] = []  # client->server lines, all connections, in order
        self._hidden: frozenset[int] = frozenset()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="imap-fault", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every proxied connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("proxy not started")
        return (HOST, int(self._listener.getsockname()[1]))

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    # ------------------------------------------------------------------ modes

    @property
    def mode(self) -> str:
        return self._mode.kind

    def pass_through(self) -> None:
        self._set(_Mode("pass"))

    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._set(_Mode("delay", seconds=seconds))

    def drop_after_bytes(self, n: int, *, reset: bool = False) -> None:
        if n < 0:
            raise ValueError("byte count must be >= 0")
        self._set(_Mode("drop", limit=n, reset=reset))

    def hide_uids(self, uids: set[int]) -> None:
        """Drop the server's untagged FETCH responses about these UIDs (empty: hide none)."""
        self._hidden = frozenset(uids)

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_to_client = 0
            self.commands = []

    def cut_all(self) -> None:
        """Close every current connection right now (new ones are still accepted)."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    # ------------------------------------------------------------------ internals

    def _set(self, mode: _Mode) -> None:
        with self._lock:
            self._generation += 1
            self._mode = _Mode(
                mode.kind, mode.seconds, mode.limit, mode.reset, generation=self._generation
            )

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_to_client += n

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, upstream)
            with self._lock:
                self._links.add(link)
                self.accepted += 1
            link.start()


Respond = Callable[[bytes, bytes], bytes | None]


class FakeImapServer:
    """A scripted IMAP server on 127.0.0.1:<ephemeral>.

    Each connection gets ``greeting``; then every command line the client sends goes to
    ``respond(tag, command)`` (the command word upper-cased with its arguments), whose bytes
    are sent back — None closes the connection. ``respond=None`` closes right after the
    greeting. ``accepted`` counts connections; ``commands`` keeps the command words in order.
    """

    def __init__(self, greeting: bytes, respond: Respond | None = None) -> None:
        self.greeting, self.respond = greeting, respond
        self.accepted = 0
        self.commands: list[bytes] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._accept_loop, name="fake-imap", daemon=True)

    def __enter__(self) -> FakeImapServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(30)
            conn.sendall(self.greeting)
            if self.respond is None:
                return
            stream = conn.makefile("rb")
            while True:
                line = stream.readline()
                if not line:
                    return
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                word, _, args = rest.partition(b" ")
                command = word.upper() + (b" " + args if args else b"")
                with self._lock:
                    self.commands.append(word.upper())
                answer = self.respond(tag, command)
                if answer is None:
                    return
                conn.sendall(answer)


def answer_basics(tag: bytes, command: bytes, *, login: bytes = b"OK LOGIN done") -> bytes:
    """The answers every scripted session needs: CAPABILITY, LOGIN (``login`` is the
    tagged answer, e.g. ``b"NO [THROTTLED] slow down"``) and LOGOUT."""
    word = command.split(b" ", 1)[0]
    if word == b"CAPABILITY":
        return b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
    if word == b"LOGIN":
        return tag + b" " + login + b"\r\n"
    if word == b"LOGOUT":
        return b"* BYE bye\r\n" + tag + b" OK done\r\n"
    return tag + b" BAD unknown command\r\n"

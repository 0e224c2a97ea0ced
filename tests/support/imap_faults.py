"""Fault-injecting TCP proxy for IMAP resilience tests.

One job: sit on an ephemeral loopback port in front of an IMAP server (normally a
``DovecotServer``) and forward bytes both ways, optionally misbehaving on the
server->client direction. Modes, switchable at runtime for live and new connections:

* ``pass_through()`` - forward unchanged;
* ``delay(seconds)`` - hold every server->client chunk for ``seconds`` before sending;
* ``drop_after_bytes(n)`` - forward ``n`` more server->client bytes per connection
  (counted from when the connection first sees this mode, so a new connection's budget
  includes the greeting), then cut the connection (both directions, ``reset=True`` for
  an RST instead of a FIN).

Threads, blocking sockets, no dependencies beyond the standard library.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass

HOST = "127.0.0.1"


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
                if not self._forward(data):
                    return
        except OSError:
            pass
        finally:
            self.close()

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
                    self.client.sendall(data[: self._budget])
                self._budget = 0
                self.close(reset=mode.reset)
                return False
            self._budget -= len(data)
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

"""Brokers for tests: a RabbitMQ vhost of the test session's own, emptying a broker between
stacks, and a TCP link to a broker that a test can cut and restore (the broker "goes down" for
the processes behind it, while the shared server itself is never stopped).

RabbitMQ must be reachable: a missing or stopped server fails the tests that need it, loudly —
``scripts/ensure-services`` starts it (and installs it when missing).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
RABBITMQ_USER = "guest"


def _rabbitmqctl(*args: str) -> None:
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if not os.path.exists(binary):
        raise RuntimeError("rabbitmqctl not found: run scripts/ensure-services")
    res = subprocess.run(
        [binary, "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"rabbitmqctl {args[0]} failed ({res.returncode}): {res.stderr.strip()[-500:]} "
            "— is RabbitMQ running? scripts/ensure-services starts it"
        )


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh vhost (guest may do anything in it), deleted afterwards; yields its broker URL."""
    with socket.socket() as s:
        s.settimeout(2)
        if s.connect_ex((RABBITMQ_HOST, RABBITMQ_PORT)) != 0:
            raise RuntimeError(
                f"RabbitMQ is not listening on {RABBITMQ_HOST}:{RABBITMQ_PORT}: "
                "run scripts/ensure-services"
            )
    name = f"inboxlog-test-{os.getpid()}-{secrets.token_hex(3)}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, RABBITMQ_USER, ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


def empty_broker(url: str, queues: tuple[str, ...]) -> None:
    """Drop every waiting task: a Redis db is flushed, a RabbitMQ vhost's queues are purged."""
    if url.startswith("redis://"):
        import redis

        redis.Redis.from_url(url).flushdb()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        for name in queues:
            channel = conn.channel()  # a missing queue closes its channel: one per queue
            try:
                channel.queue_purge(name)
            except conn.channel_errors:
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


class CuttableLink:
    """A TCP relay on a free loopback port in front of a broker. ``cut()`` closes the listener
    and every relayed connection (clients see the broker go away: resets, then refused
    connections); ``restore()`` listens again on the same port. Messages already in the broker
    stay there — what is tested is the clients' side of an outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def url_for(self, broker_url: str) -> str:
        """``broker_url`` with its host and port replaced by this link's."""
        scheme, rest = broker_url.split("://", 1)
        creds, _, tail = rest.rpartition("@")
        path = tail.split("/", 1)[1] if "/" in tail else ""
        prefix = f"{creds}@" if creds else ""
        return f"{scheme}://{prefix}127.0.0.1:{self.port}/{path}"

    def restore(self) -> CuttableLink:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            socks, self._socks = self._socks, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    continue
                self._socks |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._socks.discard(src)
            src.close()  # each socket is the source of exactly one pipe

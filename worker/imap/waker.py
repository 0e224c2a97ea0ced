"""A wake-up a sleeping connection thread can wait on together with its IMAP socket.

An idle connection sleeps in ``poll()`` on its socket until the server says something, its
next check is due, or someone wakes it (the poller: stop, or its settings changed). Nothing
wakes it on a timer to look at flags, so a thousand idle mailboxes cost no CPU.
"""

from __future__ import annotations

import os
import select
import socket
import threading


class Waker:
    """One readable file descriptor per thread: an eventfd on Linux, else a socket pair."""

    def __init__(self) -> None:
        # A closed descriptor's number is soon reused: wake() after close() must not write
        # into whatever file got it.
        self._lock = threading.Lock()
        self._closed = False
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            self._pair = socket.socketpair()
            for end in self._pair:
                end.setblocking(False)
            self._fd = self._pair[0].fileno()

    def fileno(self) -> int:
        return self._fd

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                self._signal()

    def _signal(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_write(self._fd, 1)
            else:  # pragma: no cover - not Linux
                self._pair[1].send(b"\0")
        except (BlockingIOError, OSError):  # already woken, or closed at shutdown
            pass

    def clear(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_read(self._fd)
            else:  # pragma: no cover - not Linux
                self._pair[0].recv(4096)
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pair is None:
                os.close(self._fd)
            else:  # pragma: no cover - not Linux
                for end in self._pair:
                    end.close()


def wait_readable(sock_fd: int | None, waker: Waker, timeout: float) -> tuple[bool, bool]:
    """Sleep until ``sock_fd`` (if any) or the waker is readable, or ``timeout`` seconds;
    returns (socket readable, woken)."""
    poller = select.poll()
    poller.register(waker.fileno(), select.POLLIN)
    if sock_fd is not None:
        poller.register(sock_fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    ready = {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)}
    return (sock_fd in ready, waker.fileno() in ready)

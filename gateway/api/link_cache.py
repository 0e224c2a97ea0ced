"""Tracking links already read, kept in memory so that a pixel or a click costs no read.

A link is fixed when its mail is sent, except the moment its copy was accepted, which is set
once: a click link is kept only once that moment is known (a scanner is told by it). Entries
live ``ttl`` seconds at most, so a deleted account's links stop answering soon after, and the
cache holds at most ``size`` links (the least recently used go first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from shared.services.tracking import Link


class LinkCache:
    def __init__(self, size: int = 50_000, ttl: float = 300.0) -> None:
        self.size, self.ttl = size, ttl
        self._links: OrderedDict[str, tuple[Link, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, now: float | None = None) -> Link | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            found = self._links.get(token)
            if found is None:
                return None
            link, expires = found
            if now >= expires:
                del self._links[token]
                return None
            self._links.move_to_end(token)
            return link

    def put(self, link: Link, now: float | None = None) -> None:
        if link.kind == "click" and link.accepted_at is None:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            self._links[link.token] = (link, now + self.ttl)
            self._links.move_to_end(link.token)
            while len(self._links) > self.size:
                self._links.popitem(last=False)

    def __len__(self) -> int:
        return len(self._links)

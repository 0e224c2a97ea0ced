"""Sliding-window rate limits per client address and per account (§6)."""

from __future__ import annotations

import time
from collections import defaultdict, deque


class RateLimiter:
    def __init__(self, per_minute: int, window: float = 60.0) -> None:
        self.limit, self.window = per_minute, window
        self._hits: dict[object, deque[float]] = defaultdict(deque)

    def allow(self, key: object, now: float | None = None) -> bool:
        """Count one event for ``key``; False when it is over the limit."""
        if self.limit <= 0:
            return True
        now = time.monotonic() if now is None else now
        hits = self._hits[key]
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

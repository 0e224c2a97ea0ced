"""Who is asking, for routes anyone may call (tracking): the client address — from
X-Forwarded-For only when the peer is a trusted reverse proxy (INBOXLOG_TRUSTED_PROXIES) — and
a per-client rate limit that keeps those routes cheap under abuse."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict

from shared.networks import Networks

XFF_SCAN = 2048  # characters of X-Forwarded-For looked at


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Networks) -> str | None:
    """The peer, or — behind trusted proxies — the last address in X-Forwarded-For that is
    not one of them (the client as the outermost trusted proxy saw it)."""
    if peer is None or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in (forwarded_for or "")[:XFF_SCAN].split(",")]
    for hop in reversed([h for h in hops if h]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain: believe only the peer
        if not _in(hop, trusted):
            return hop
    return peer


def _in(address: str, networks: Networks) -> bool:
    return networks.contains(address)


class RateLimiter:
    """A token bucket per client (``rate`` per second, bursts of ``burst``), for at most
    ``clients`` clients at once (the least recently seen are forgotten)."""

    def __init__(self, rate: float, burst: float, clients: int = 10_000) -> None:
        self.rate, self.burst, self.clients = rate, burst, clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str | None, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        key = key or "?"
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.clients:
                self._buckets.popitem(last=False)
            return allowed

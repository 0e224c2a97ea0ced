"""Who calls the tracking routes: X-Forwarded-For believed only from trusted proxies, and a
per-client rate limit with a bounded memory (§9)."""

from __future__ import annotations

from gateway.api.clients import RateLimiter, client_ip
from shared.networks import Networks


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    proxies = Networks.parse("10.0.0.0/8")
    assert client_ip("198.51.100.7", "203.0.113.9", proxies) == "198.51.100.7"
    assert client_ip("10.0.0.2", "203.0.113.9", proxies) == "203.0.113.9"
    # The client may prepend anything: the last address not ours is the one our proxy saw.
    assert client_ip("10.0.0.2", "1.2.3.4, 203.0.113.9, 10.0.0.5", proxies) == ("203.0.113.9")
    assert client_ip("10.0.0.2", "not-an-ip", proxies) == "10.0.0.2"
    assert client_ip("10.0.0.2", "1.2.3.4," * 10_000, proxies) == "1.2.3.4"
    assert client_ip("10.0.0.2", None, Networks()) == "10.0.0.2"


def test_the_rate_limit_allows_a_burst_then_the_rate_per_client() -> None:
    limiter = RateLimiter(rate=2.0, burst=5.0)
    assert [limiter.allow("a", now=100.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("b", now=100.0)  # another client has its own bucket
    assert not limiter.allow("a", now=100.2)
    assert limiter.allow("a", now=100.5)  # one token back after half a second at 2/s
    assert not limiter.allow("a", now=100.5)


def test_the_limiter_remembers_a_bounded_number_of_clients() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0, clients=100)
    for i in range(10_000):
        limiter.allow(f"198.51.{i // 256}.{i % 256}", now=0.0)
    assert len(limiter._buckets) == 100

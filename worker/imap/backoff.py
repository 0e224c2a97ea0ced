"""When a connection may talk to its server again (§6 Provider-friendly): reconnects back off
from 2 s to 5 min with jitter, a server that drops us soon after login is retried more slowly
each time, a server's own request to wait is honoured (capped at 15 minutes), and the logins
a poller starts at once — after a restart, or taking over a dead poller's connections — are
spread out instead of arriving as one burst.

Pure arithmetic over an injected random source: the schedule is unit-tested without a clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from worker.imap.errors import HINT_CAP_SECONDS

BASE_SECONDS = 2.0
MAX_SECONDS = 300.0
JITTER = 0.2  # each wait is stretched by up to 20 %, so connections that failed together part
# A session that lived this long after its login was a healthy one: the next failure starts
# the schedule afresh. One that died sooner (a server dropping us right after login, or no
# login at all) counts as another failure in a row — so a server that accepts the login and
# then drops the connection is not hammered every 2 s.
HEALTHY_AFTER_SECONDS = 60.0
# Logins started together: one every STAGGER_SECONDS (plus jitter), all within the window.
STAGGER_SECONDS = 0.1
STAGGER_WINDOW_SECONDS = 30.0


def backoff_seconds(failures: int, rng: random.Random) -> float:
    """The wait after ``failures`` failures in a row (≥ 1): 2, 4, 8 … seconds, each stretched
    by up to 20 %, never beyond 5 minutes."""
    ceiling = MAX_SECONDS / (1 + JITTER)
    raw = min(ceiling, BASE_SECONDS * 2.0 ** min(failures - 1, 30))
    return raw * (1 + rng.uniform(0, JITTER))


@dataclass
class Backoff:
    """One connection's retry schedule."""

    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0  # failures in a row, healthy sessions excepted

    def after_failure(
        self, *, session_seconds: float | None, hint_seconds: float | None = None
    ) -> float:
        """Seconds to wait before the next attempt.

        ``session_seconds``: how long the session had been logged in when it failed (None: the
        failure came before a login). ``hint_seconds``: how long the server asked us to stay
        away — honoured up to 15 minutes, and never shortened by the schedule.
        """
        if session_seconds is not None and session_seconds >= HEALTHY_AFTER_SECONDS:
            self.failures = 0
        self.failures += 1
        wait = backoff_seconds(self.failures, self.rng)
        if hint_seconds is not None and hint_seconds > 0:
            hinted = min(HINT_CAP_SECONDS, hint_seconds * (1 + self.rng.uniform(0, JITTER / 2)))
            wait = max(wait, hinted)
        return wait


def login_delays(n: int, rng: random.Random) -> list[float]:
    """Start delays for ``n`` connections a poller takes at once: one login every
    ``STAGGER_SECONDS`` with jitter inside each slot, squeezed to fit the window when many."""
    if n <= 0:
        return []
    slot = min(STAGGER_SECONDS, STAGGER_WINDOW_SECONDS / n)
    return [k * slot + rng.uniform(0, slot) for k in range(n)]

"""How often a connection asks the provider for a token, at the default leeway (§10).

A poller session signs in, keeps its session until the token's refresh time, then signs in
again with a token from TokenKeeper — which refreshes when the stored token is due. A second
process (say, outbound SMTP) asks for a token at random moments too. Simulated time runs over
24 hours (the keeper's clock is injected); every refresh is a real HTTP round trip to a local
authorization server with refresh-token rotation, saved to a real SQLite database.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.fernet import Fernet  # noqa: E402

from bench.bench_report import Figures, machine, print_figures  # noqa: E402
from shared.crypto import SecretBox  # noqa: E402
from shared.db.base import utcnow  # noqa: E402
from shared.db.engine import make_engine, make_session_factory  # noqa: E402
from shared.oauth.tokens import TokenKeeper  # noqa: E402
from tests.support.databases import fresh_sqlite  # noqa: E402
from tests.support.oauth_flow import (  # noqa: E402
    LOOPBACK,
    obtain_token,
    provider_env,
    provider_from,
    register_client,
    store_grant,
)
from tests.support.oauth_server import LocalOAuthServer  # noqa: E402
from tests.support.world import new_world  # noqa: E402

HOURS = 24
REDIRECT = "http://127.0.0.1:9/oauth/callback"


def simulate(ttl: int, db_url: str) -> tuple[float, float, list[float]]:
    """(token requests per hour, sign-ins per hour, seconds per refresh)."""
    with LocalOAuthServer(access_token_ttl=ttl) as server:
        sessions = make_session_factory(make_engine(db_url))
        box = SecretBox(Fernet.generate_key().decode())
        client_id, secret = register_client(server, REDIRECT)
        provider = provider_from(provider_env(server, client_id=client_id, client_secret=secret))
        world = new_world(sessions, admin_email=f"admin-{ttl}@ours.example")
        inbox_id, _ = world.inbox("Support", [world.admin_id])
        address = f"support-{ttl}@ours.example"
        cid = world.connect(address, kind="team", inbox_id=inbox_id)
        start = utcnow()
        server.next_consent(address)
        store_grant(sessions, box, cid, provider, obtain_token(provider, REDIRECT), issued_at=start)
        now = [start]
        keeper = TokenKeeper(
            sessions, box, {"local": provider}, allowed=LOOPBACK, clock=lambda: now[0]
        )
        rng = random.Random(7)
        end = start + timedelta(hours=HOURS)
        next_login: datetime = start
        next_other = start + timedelta(seconds=rng.uniform(0, 600))
        logins, timings = 0, []
        before = server.count("refresh_token")
        while now[0] < end:
            now[0] = min(next_login, next_other)
            t0 = time.perf_counter()
            asked = server.count("refresh_token")
            token = keeper.access_token(cid)
            if server.count("refresh_token") > asked:
                timings.append(time.perf_counter() - t0)
            if now[0] == next_login:
                logins += 1
                next_login = token.refresh_at
            else:
                next_other = now[0] + timedelta(seconds=rng.uniform(0, 600))
        assert server.count("refresh_token", outcome="invalid_grant") == 0
        return (server.count("refresh_token") - before) / HOURS, logins / HOURS, timings


def main() -> None:
    started = time.monotonic()
    fig = Figures()
    with tempfile.TemporaryDirectory() as tmp, fresh_sqlite(Path(tmp)) as db_url:
        for ttl, label in ((3600, "1-hour tokens (Google, Microsoft)"), (90, "90-second tokens")):
            per_hour, logins, timings = simulate(ttl, db_url)
            fig.rows.append((f"token requests / connection / hour, {label}", f"{per_hour:.2f}", ""))
            fig.rows.append((f"IMAP sign-ins / connection / hour, {label}", f"{logins:.2f}", ""))
            fig.rows.append(
                (
                    f"refresh round trip (median), {label}",
                    f"{statistics.median(timings) * 1000:.1f} ms",
                    f"{len(timings)} refreshes, local server + SQLite save",
                )
            )
            expected = 3600 / (ttl - 60 if ttl >= 120 else ttl / 2)
            when = "60 s early" if ttl >= 120 else "at half life"
            fig.targets.append(
                (
                    f"one refresh per token life, {label}",
                    f"{per_hour:.2f}/h",
                    f"expected {expected:.2f}/h (refresh {when})",
                    abs(per_hour - expected) <= 0.1 * expected,
                )
            )
    fig.notes.append(
        f"{HOURS} h simulated per case; a second process asks at random moments; {machine()}"
    )
    print_figures(fig, time.monotonic() - started)


if __name__ == "__main__":
    main()

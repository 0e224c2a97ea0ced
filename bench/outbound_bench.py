"""Outbound throughput (§9 targets): tracked sends delivered per second on 2 workers, and
tracking-endpoint requests per second on one API process.

Sends: N messages through ``POST /v1/emails/send`` from 20 users, each with their own
connection (HTML with two links, one external To — tracked, its own copy — and one internal Cc
— an untracked copy). They are posted first, with no worker running (the API's own rate), then
delivered by ``inboxlog worker -c 2`` to an aiosmtpd upstream on loopback (plain SMTP, no AUTH:
the upstream's cost is not ours to measure, though it shares the two cores). The delivery rate
is (N − 1) / (last outbox ``sent_at`` − first ``sent_at``): the workers' rate once running.

Tracking: pixels, then links, are fetched with keep-alive by
``wrk`` (Debian's package; ``bench/outbound`` installs it when it can — without it, Python
client processes, which cost far more CPU on the same two cores and say so), behind a "proxy"
(``INBOXLOG_TRUSTED_PROXIES``) that names a different client address per request (so the
per-client rate limit does not cap a benchmark that is one machine); every request is a
recorded open (click). Three runs: 60,000 pixels of the sent copies (stored as a send stores
them) each fetched once — a campaign's pixels are mostly fetched once or twice, so first hits,
which no cache knows, are the case that counts; then the sent pixels at random, again and
again; then the links.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import multiprocessing
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from bench_report import Figures, machine, print_figures  # noqa: E402

from shared.db.models import Outbox, StoredMessage, TrackingEvent, TrackingLink  # noqa: E402
from shared.outbound.compose import new_token  # noqa: E402
from tests.support.databases import fresh_postgres  # noqa: E402
from tests.support.stack import make_stack, redis_broker_url, wait_for  # noqa: E402
from tests.support.upstream_smtp import UpstreamSmtp  # noqa: E402

HTML = (
    "<html><body><p>Hello,</p><p>your <a href='https://shop.example/order/{n}'>order</a> "
    "ships today. <a href='https://shop.example/help'>Help</a></p></body></html>"
)


def _hammer(urls: list[str], seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    rng = random.Random()
    done = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            ip = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            r = client.get(rng.choice(urls), headers={"X-Forwarded-For": ip})
            if r.status_code in (200, 302):
                done += 1
    out.put(done)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--senders", type=int, default=20)
    ap.add_argument("--cold-pixels", type=int, default=60_000)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    started = time.monotonic()
    fig = Figures()
    with (
        UpstreamSmtp(tls="none") as upstream,
        fresh_postgres() as db_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        stack = make_stack(
            Path(tmp), db_url, redis_broker_url(), INBOXLOG_TRUSTED_PROXIES="127.0.0.1/32"
        )
        base = f"http://127.0.0.1:{stack.env['INBOXLOG_HTTP_PORT']}"
        stack.env["INBOXLOG_PUBLIC_URL"] = base
        try:
            stack.start_api()
            senders = _senders(stack, base, upstream, args.senders)
            # A backlog first (no worker yet): the API's rate alone, then the workers' alone.
            posted = _post(base, senders, args.messages)
            stack.start_worker(concurrency=2)
            sent_rate = _drain(stack, args.messages)
            logged_rate = _logged(stack, args.messages)
            # The tracking figures are the API process's: no worker competes for the cores.
            stack.stop("worker")
            fig.rows.append(
                ("sends accepted by the API", f"{posted:,.0f} msg/s", "8 clients, one API process")
            )
            fig.rows.append(
                (
                    "tracked sends delivered",
                    f"{sent_rate:,.0f} msg/s",
                    f"a backlog of {args.messages} from {args.senders} senders, 2 copies each, "
                    "worker -c 2",
                )
            )
            fig.rows.append(
                (
                    "  … and logged (source sent)",
                    f"{logged_rate:,.0f} msg/s",
                    "first sent → last logged, the same workers",
                )
            )
            pixels = sorted({u for d in upstream.deliveries for u in _tracked(d.data, "o")})
            links = sorted({u for d in upstream.deliveries for u in _tracked(d.data, "c")})
            assert pixels and links, "no tracked copy reached the upstream"
            # A campaign's pixels are mostly fetched once or twice each: first hits, which no
            # cache knows, are the common case. More pixels of the sent copies than the run
            # can fetch, each fetched once, in order; then the sent ones, at random, again
            # and again; then the links.
            fresh = _more_pixels(stack, pixels[0].split("/t/", 1)[0], args.cold_pixels)
            runs = (
                ("opens, each pixel's first", fresh, "seq"),
                ("opens, pixels fetched again", pixels, "random"),
                ("clicks", links, "random"),
            )
            rate = 0.0
            for label, urls, order in runs:
                before = _events(stack)
                got, how = _tracking(urls, args.clients, args.seconds, Path(tmp), order)
                stored = _events(stack) - before
                rate = rate or got
                fig.rows.append(
                    (f"tracking: {label}", f"{got:,.0f} req/s", f"{how}, {stored:,} events stored")
                )
            fig.targets.append(
                ("sends ≥ 200 msg/s on 2 workers", f"{sent_rate:,.0f}", "", sent_rate >= 200)
            )
            fig.targets.append(
                ("tracking ≥ 2,000 req/s on one API process", f"{rate:,.0f}", "", rate >= 2000)
            )
        finally:
            stack.close()
            stack.sessions.kw["bind"].dispose()
    fig.notes.append(machine())
    print_figures(fig, time.monotonic() - started)


def _tracked(data: bytes, kind: str) -> list[str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    part = msg.get_body(("html",))  # type: ignore[attr-defined]
    return re.findall(rf'"(http[^"]*/t/{kind}/[^"]+)"', part.get_content()) if part else []


def _more_pixels(stack, base: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    """``n`` more open pixels of the tracked copies just sent — rows like those a send
    stores, spread over its copies and recipients — as URLs."""
    with stack.sessions() as s, s.begin():
        copies = s.execute(
            sa.select(TrackingLink.outbox_id, TrackingLink.copy_id, TrackingLink.recipient)
            .where(TrackingLink.kind == "open")
            .order_by(TrackingLink.copy_id)
        ).all()
        rows = [
            {"token": new_token(), "kind": "open", "url": None, "outbox_id": o, "copy_id": c,
             "recipient": r}
            for o, c, r in (copies[i % len(copies)] for i in range(n))
        ]  # fmt: skip
        s.execute(sa.insert(TrackingLink), rows)
    return [f"{base}/t/o/{row['token']}" for row in rows]


def _events(stack) -> int:  # type: ignore[no-untyped-def]
    with stack.sessions() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(TrackingEvent)) or 0)


def _senders(stack, base: str, upstream: UpstreamSmtp, k: int) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """``k`` users, each sending from their own connection: (address, API token)."""
    admin = stack.new_account("Bench")
    auth = {"Authorization": f"Bearer {admin}"}
    httpx.patch(
        base + "/v1/account/settings",
        headers=auth,
        timeout=30,
        json={"internal_domains": ["ours.example"]},
    ).raise_for_status()
    found = []
    for i in range(k):
        address = f"rep{i}@ours.example"
        user = httpx.post(base + "/v1/users", headers=auth, timeout=30, json={"email": address})
        user.raise_for_status()
        token = user.json()["token"]
        httpx.post(
            base + "/v1/connections",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            json={
                "address": address,
                "kind": "personal",
                "smtp": {"host": "localhost", "port": upstream.port, "security": "none"},
            },
        ).raise_for_status()
        found.append((address, token))
    return found


def _post(base: str, senders: list[tuple[str, str]], n: int) -> float:
    """Post ``n`` tracked sends round-robin over the senders (8 at a time); posts per second."""

    def post(i: int) -> None:
        address, token = senders[i % len(senders)]
        httpx.post(
            base + "/v1/emails/send",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            json={
                "from": address,
                "to": [f"customer{i}@customer.example"],
                "cc": ["colleague@ours.example"],
                "subject": f"Order {i}",
                "text": "Your order ships.",
                "html": HTML.format(n=i),
                "track": True,
                "log": True,
            },
        ).raise_for_status()

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, range(n)))
    return n / (time.monotonic() - t0)


def _drain(stack, n: int) -> float:  # type: ignore[no-untyped-def]
    """Sends per second from the first ``sent`` to the last, once all ``n`` are sent."""
    wait_for(lambda: _sent(stack) >= n, 900, lambda: stack.log("worker")[-3000:], interval=0.2)
    with stack.sessions() as s:
        spread = sa.select(sa.func.min(Outbox.sent_at), sa.func.max(Outbox.sent_at))
        first, last = s.execute(spread).one()
    return (n - 1) / max((last - first).total_seconds(), 1e-6)


def _logged(stack, n: int) -> float:  # type: ignore[no-untyped-def]
    """Sent mail logged per second: first ``sent_at`` to the last logged copy's processing."""

    def done() -> int:
        with stack.sessions() as s:
            return int(
                s.scalar(
                    sa.select(sa.func.count())
                    .select_from(StoredMessage)
                    .where(StoredMessage.source == "sent", StoredMessage.processed_at.is_not(None))
                )
                or 0
            )

    wait_for(lambda: done() >= n, 900, lambda: stack.log("worker")[-3000:], interval=0.2)
    with stack.sessions() as s:
        first = s.scalar(sa.select(sa.func.min(Outbox.sent_at)))
        last = s.scalar(
            sa.select(sa.func.max(StoredMessage.processed_at)).where(StoredMessage.source == "sent")
        )
    return n / max((last - first).total_seconds(), 1e-6)


def _sent(stack) -> int:  # type: ignore[no-untyped-def]
    with stack.sessions() as s:
        return int(
            s.scalar(sa.select(sa.func.count()).select_from(Outbox).where(Outbox.status == "sent"))
            or 0
        )


WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local sequential = os.getenv("BENCH_ORDER") == "seq"
local started = 0
function setup(thread)
  thread:set("id", started)
  started = started + 1
end
local n = 0
math.randomseed(os.time())
request = function()
  local ip = "198.51." .. math.random(0, 255) .. "." .. math.random(1, 254)
  local i = math.random(#paths)
  if sequential then  -- thread k of 2 takes paths k, k + 2, k + 4 ...: each one once
    i = (n * 2 + id) % #paths + 1
    n = n + 1
  end
  return wrk.format("GET", paths[i], {["X-Forwarded-For"] = ip})
end
response = function(status, headers, body)
  if status ~= 200 and status ~= 302 then wrk.thread:stop() end
end
"""


def _tracking(
    urls: list[str], clients: int, seconds: float, tmp: Path, order: str = "random"
) -> tuple[float, str]:
    """Requests per second, and how they were made."""
    if shutil.which("wrk"):
        base = urls[0].split("/t/", 1)[0]
        (tmp / "paths").write_text("".join(u[len(base) :] + "\n" for u in urls))
        (tmp / "bench.lua").write_text(WRK_SCRIPT)
        conns = 8 * clients
        out = subprocess.run(
            ["wrk", "-t2", f"-c{conns}", f"-d{seconds:.0f}s", "-s", str(tmp / "bench.lua"), base],
            env={"BENCH_PATHS": str(tmp / "paths"), "BENCH_ORDER": order, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        assert found and "Non-2xx" not in out, out
        return float(found.group(1)), f"wrk, 2 threads, {conns} connections"
    return _python_clients(urls, clients, seconds), f"{clients} Python client processes (no wrk)"


def _python_clients(urls: list[str], clients: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(urls, seconds, out)) for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


if __name__ == "__main__":
    main()

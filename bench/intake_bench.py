# ruff: noqa: E501
"""Intake benchmark: the SMTP gateway + Celery worker on PostgreSQL and Redis, against bare aiosmtpd.

One run measures, on a fresh PostgreSQL database and an empty Redis db of its own:

  yardsticks  the same SMTP load against (1) a bare aiosmtpd that writes each message to its own
              file and fsyncs it before the 250, (2) a bare aiosmtpd that stores nothing;
  (a)         the gateway's accept rate, worker stopped (first MAIL to last 250, all sessions);
  (b)         end-to-end throughput: the worker draining that backlog, and a live run (gateway and
              worker together, sending flat out) until a decision row exists for every message;
  (c)         250 -> decision-row latency at a paced, open-loop offered rate (100 messages/s).

Every server runs as its own process; the load generator is a small asyncio SMTP client in this
process (one persistent connection per session, MAIL/RCPT/DATA without pipelining, as smtplib).

With ``--client smtp-source`` or ``both`` (the default), an independent client too: Postfix's
``smtp-source`` (installed from Debian's postfix package when missing, its daemon stopped again)
runs ``--source-runs`` times (3) ``-s 20 -m 5000 -l 10240`` against the fsync yardstick, then the
same against the gateway with the worker running, all on ONE account that grows run after run;
per run it reports the accept rate, its ratio to the yardstick and end-to-end (smtp-source start
to every message decided). ``--vacuum`` runs VACUUM (ANALYZE) before each run, standing in for
autovacuum (the shared test server runs with it off); ``--source-reuse`` adds ``-d`` (one
connection per session instead of one per message).

It starts and cleans up every process, the database and the Redis db, and exits 0 whatever the
figures are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_measure import cpu_snapshot, free_port, pct, profile, stop_process, stop_profile  # noqa: E402  (bench/ is on sys.path)
from bench_report import Figures, fmt_rate, machine, print_figures  # noqa: E402
from bench_smtp_source import SourceRun, ensure_smtp_source, run_smtp_source  # noqa: E402

SENDER = "alice@ours.example"

# --------------------------------------------------------------------------------------------
# Yardstick servers (run as `intake_bench.py --yardstick-server KIND`, a process of their own)
# --------------------------------------------------------------------------------------------


def _write_fsync(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class FsyncHandler:
    """Writes each message to its own file and fsyncs it (off the event loop) before the 250."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.seq = directory, itertools.count(1)

    async def handle_DATA(self, server: object, session: object, envelope) -> str:  # type: ignore[no-untyped-def]
        path = self.directory / f"{next(self.seq)}.eml"
        await asyncio.to_thread(_write_fsync, path, envelope.original_content or b"")
        return "250 2.0.0 OK"


class NullHandler:
    async def handle_DATA(self, server: object, session: object, envelope) -> str:  # type: ignore[no-untyped-def]
        return "250 2.0.0 OK"


def serve_yardstick(kind: str, port: int, directory: Path) -> None:
    from aiosmtpd.smtp import SMTP

    handler = FsyncHandler(directory) if kind == "fsync" else NullHandler()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                handler,
                data_size_limit=26_214_400,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname="yardstick",
            ),
            host="127.0.0.1",
            port=port,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

JA_LINES = [
    "いつもお世話になっております。株式会社オーシャンズの佐藤です。",
    "先日お打ち合わせいたしました件につきまして、お見積書を添付いたします。",
    "ご不明な点がございましたら、お気軽にお問い合わせください。",
    "納期につきましては、ご注文確定後およそ二週間を予定しております。",
    "引き続きどうぞよろしくお願いいたします。",
]
EN_WORDS = [
    "quote",
    "order",
    "invoice",
    "meeting",
    "schedule",
    "delivery",
    "price",
    "contract",
    "team",
    "renewal",
    "licence",
    "seats",
    "onboarding",
    "support",
    "escalation",
    "follow-up",
    "proposal",
]
DOMAINS = [
    "acme.co.jp",
    "example-trading.jp",
    "globex.example",
    "initech.example",
    "umbrella.example",
    "gmail.com",
    "yahoo.co.jp",
    "hooli.example",
    "stark.example",
    "wayne.example",
    "tyrell.example",
    "cyberdyne.example",
    "soylent.example",
    "wonka.example",
    "oscorp.example",
]


def _recipient_pool(rnd: random.Random, n: int = 300) -> list[tuple[str, str]]:
    return [
        (
            f"Contact {i}",
            f"c{i}.{rnd.choice(['ken', 'amy', 'yui', 'bob', 'sam'])}@{rnd.choice(DOMAINS)}",
        )
        for i in range(n)
    ]


def _body_text(rnd: random.Random, target: int) -> str:
    out, size = [], 0
    while size < target:
        if rnd.random() < 0.35:
            line = rnd.choice(JA_LINES)
            size += len(line.encode())
        else:
            line = (
                " ".join(rnd.choice(EN_WORDS) for _ in range(rnd.randint(8, 12))).capitalize() + "."
            )
            size += len(line)
        out.append(line)
    return "\n".join(out) + "\n"


def build_messages(tag: str, n: int, seed: int, size: int = 10_000) -> list[tuple[str, bytes]]:
    """``n`` distinct ~``size``-byte BCCs from the account's admin to 1-2 external recipients.

    Returns (Message-ID without brackets, DATA payload dot-stuffed and terminated) pairs.
    A third are text/plain UTF-8 (8bit), a third multipart/alternative with HTML (base64),
    a third ISO-2022-JP text/plain, as Japanese mail clients still send it.
    """
    rnd = random.Random(seed)
    pool = _recipient_pool(random.Random(1))
    base = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    out = []
    for i in range(n):
        m = EmailMessage(policy=SMTP_POLICY)
        m["From"] = f"Alice <{SENDER}>"
        m["To"] = ", ".join(
            f"{name} <{addr}>" for name, addr in rnd.sample(pool, rnd.randint(1, 2))
        )
        style = i % 3
        m["Subject"] = f"お見積りの件 #{i}" if style else f"Re: {rnd.choice(EN_WORDS)} {tag} #{i}"
        m["Date"] = format_datetime(base + timedelta(seconds=i))
        mid = f"bench-{tag}-{i}.{rnd.getrandbits(40):x}@ours.example"
        m["Message-ID"] = f"<{mid}>"
        if style == 2:
            text = _body_text(rnd, int(size * 0.9))
            m.set_content(
                text.encode("iso2022_jp", "ignore"),
                maintype="text",
                subtype="plain",
                cte="7bit",
                params={"charset": "ISO-2022-JP"},
            )
        elif style == 1:
            text = _body_text(rnd, int(size * 0.35))
            m.set_content(text, cte="base64")
            html = "".join(f"<p>{line}</p>" for line in text.splitlines())
            m.add_alternative(f"<html><body>{html}</body></html>", subtype="html", cte="base64")
        else:
            m.set_content(_body_text(rnd, int(size * 0.95)), cte="8bit")
        raw = m.as_bytes()
        if not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        stuffed = raw.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        out.append((mid, stuffed + b".\r\n"))
    return out


# --------------------------------------------------------------------------------------------
# Load generator: a minimal asyncio SMTP client
# --------------------------------------------------------------------------------------------


class SmtpError(Exception):
    pass


class SmtpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, port: int) -> SmtpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        c = cls(reader, writer)
        await c.expect(220)
        c.w.write(b"EHLO bench.example\r\n")
        await c.expect(250)
        return c

    async def reply(self) -> tuple[int, bytes]:
        while True:
            line = await self.r.readline()
            if not line:
                raise SmtpError("connection closed")
            if line[3:4] != b"-":
                return int(line[:3]), line

    async def expect(self, code: int) -> None:
        got, line = await self.reply()
        if got != code:
            raise SmtpError(line.decode(errors="replace").strip())

    async def send(self, rcpts: Sequence[str], payload: bytes) -> tuple[float, float, int]:
        """One transaction; returns (MAIL sent, final reply received, final code)."""
        t0 = time.monotonic()
        self.w.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
        await self.expect(250)
        for rcpt in rcpts:
            self.w.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            await self.expect(250)
        self.w.write(b"DATA\r\n")
        await self.expect(354)
        self.w.write(payload)
        code, _ = await self.reply()
        return t0, time.monotonic(), code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.w.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 2)
        self.w.close()


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_mail: float = float("inf")
    last_250: float = 0.0
    acked_at: dict[str, float] = field(default_factory=dict)  # Message-ID -> time of the 250
    sched_lag: list[float] = field(default_factory=list)  # paced: send start minus schedule
    txn: list[float] = field(default_factory=list)  # MAIL sent -> final 250, per message
    client_cpu: float = 0.0

    @property
    def accept_rate(self) -> float:
        span = self.last_250 - self.first_mail
        return self.ok / span if span > 0 else 0.0

    @property
    def span(self) -> float:
        return max(0.0, self.last_250 - self.first_mail)


async def _load(
    port: int, rcpt: str, messages: list[tuple[str, bytes]], sessions: int, rate: float | None
) -> LoadResult:
    res = LoadResult()
    q: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    clients = await asyncio.gather(*(SmtpClient.open(port) for _ in range(sessions)))

    async def session(c: SmtpClient) -> None:
        while (item := await q.get()) is not None:
            i, due = item
            mid, payload = messages[i]
            res.sent += 1
            if rate:
                res.sched_lag.append(time.monotonic() - due)
            try:
                t0, t1, code = await c.send([rcpt], payload)
            except SmtpError as exc:
                key = str(exc)[:60]
                res.errors[key] = res.errors.get(key, 0) + 1
                with contextlib.suppress(Exception):
                    c.w.write(b"RSET\r\n")
                    await c.reply()
                continue
            res.first_mail = min(res.first_mail, t0)
            if code == 250:
                res.ok += 1
                res.last_250 = max(res.last_250, t1)
                res.acked_at[mid] = t1
                res.txn.append(t1 - t0)
            else:
                res.errors[str(code)] = res.errors.get(str(code), 0) + 1
        await c.close()

    cpu0 = time.process_time()
    tasks = [asyncio.create_task(session(c)) for c in clients]
    start = time.monotonic()
    for i in range(len(messages)):
        due = start + i / rate if rate else start
        if rate:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        q.put_nowait((i, due))
    for _ in clients:
        q.put_nowait(None)
    await asyncio.gather(*tasks)
    res.client_cpu = time.process_time() - cpu0
    return res


def run_load(
    port: int,
    rcpt: str,
    messages: list[tuple[str, bytes]],
    sessions: int,
    rate: float | None = None,
) -> LoadResult:
    return asyncio.run(_load(port, rcpt, messages, sessions, rate))


# --------------------------------------------------------------------------------------------
# Observing decisions
# --------------------------------------------------------------------------------------------


def pg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def count_decisions(dsn: str, account_id: int) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM decisions WHERE account_id = %s", (account_id,)
        ).fetchone()[0]


def wait_decisions(
    dsn: str, account_id: int, n: int, timeout: float, interval: float = 0.1
) -> list[tuple[float, int]]:
    """Poll the decision count until it reaches ``n``; returns (monotonic time, count) samples."""
    import psycopg

    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            k = conn.execute(
                "SELECT count(*) FROM decisions WHERE account_id = %s", (account_id,)
            ).fetchone()[0]
            samples.append((time.monotonic(), k))
            if k >= n:
                break
            time.sleep(interval)
    return samples


class NewDecisions:
    """Counts an account's decisions as they appear, reading only the rows above the highest id
    seen (less a window: two worker processes commit out of id order) through the primary key. A
    ``count(*)`` of the account's decisions reads the whole account at every poll, and the
    account grows run after run (3 ms per poll at 10,000 decisions, 10 polls a second)."""

    WINDOW = 512
    # Two bounds: on a table never analyzed the planner reads a two-sided range of the primary
    # key (it guesses 0.5 % of rows), where "id > x" alone (a third) becomes a whole-table scan.
    SPAN = 10**9

    def __init__(self, dsn: str, account_id: int) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.account_id, self.count = account_id, 0
        top = self.conn.execute("SELECT coalesce(max(id), 0) FROM decisions").fetchone()[0]
        self.top, self.seen = top, set()
        self._read(record=False)

    def _read(self, record: bool = True) -> None:
        low = max(0, self.top - self.WINDOW)
        for rid, acct in self.conn.execute(
            "SELECT id, account_id FROM decisions WHERE id > %s AND id <= %s",
            (low, low + self.SPAN),
        ).fetchall():
            if rid not in self.seen:
                self.seen.add(rid)
                self.top = max(self.top, rid)
                if record and acct == self.account_id:
                    self.count += 1

    def wait(self, n: int, timeout: float, interval: float = 0.1) -> list[tuple[float, int]]:
        """Poll until ``n`` new decisions exist; returns (monotonic time, new count) samples."""
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read()
            samples.append((time.monotonic(), self.count))
            if self.count >= n:
                break
            time.sleep(interval)
        return samples

    def close(self) -> None:
        self.conn.close()


class DecisionWatcher(threading.Thread):
    """Polls the decisions table every ``interval`` s, noting when each Message-ID first shows.

    Rows are read by id from a window below the highest id seen, because two worker processes
    commit out of id order; duplicates are dropped by id.
    """

    def __init__(self, dsn: str, account_id: int, interval: float = 0.02) -> None:
        super().__init__(name="decision-watcher", daemon=True)
        self.dsn, self.account_id, self.interval = dsn, account_id, interval
        self.seen_at: dict[str, float] = {}
        self.ids: set[int] = set()
        self.query_times: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        import psycopg

        top = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stopped.is_set():
                q0 = time.monotonic()
                rows = conn.execute(
                    "SELECT id, message_id FROM decisions WHERE account_id = %s AND id > %s",
                    (self.account_id, max(0, top - 512)),
                ).fetchall()
                now = time.monotonic()
                self.query_times.append(now - q0)
                for rid, mid in rows:
                    if rid not in self.ids:
                        self.ids.add(rid)
                        top = max(top, rid)
                        if mid:
                            self.seen_at.setdefault(mid, now)
                time.sleep(max(0.0, self.interval - (time.monotonic() - q0)))

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def sustained_rate(
    samples: list[tuple[float, int]], n: int, lo: float = 0.1, hi: float = 0.9
) -> float | None:
    """Messages/s between the moments the count first reached lo*n and hi*n."""

    def first_at(k: float) -> float | None:
        return next((t for t, c in samples if c >= k), None)

    t_lo, t_hi = first_at(lo * n), first_at(hi * n)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None
    c_lo = next(c for t, c in samples if t == t_lo)
    c_hi = next(c for t, c in samples if t == t_hi)
    return (c_hi - c_lo) / (t_hi - t_lo)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def yardstick(kind: str, workdir: Path) -> Iterator[int]:
    port = free_port()
    directory = workdir / f"yardstick-{kind}"
    directory.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--yardstick-server",
            kind,
            "--port",
            str(port),
            "--dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"yardstick {kind} did not start: {proc.stdout.read()!r}")
        yield port
    finally:
        stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)


def redis_db() -> tuple[str, Callable[[], None]]:
    """An empty Redis db of our own (highest free number), flushed again at the end."""
    import redis

    for db in range(15, 0, -1):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.dbsize() == 0:
            client.flushdb()
            return f"redis://127.0.0.1:6379/{db}", client.flushdb
    raise RuntimeError("no empty Redis db among 1-15")


def cpu_note(
    label: str, before: dict[str, float], after: dict[str, float], messages: int, wall: float
) -> str:
    parts = []
    for name in ("gateway", "worker", "postgres", "redis", "bench"):
        if name in after:
            used = after[name] - before.get(name, 0.0)
            parts.append(f"{name} {used:.1f} s ({used / max(messages, 1) * 1000:.1f} ms/msg)")
    return f"CPU {label} over {wall:.1f} s wall: " + ", ".join(parts)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def describe_load(res: LoadResult) -> str:
    errs = ", ".join(f"{k}×{v}" for k, v in res.errors.items())
    return (
        f"{res.ok}/{res.sent} accepted in {res.span:.2f} s"
        + (f"; errors: {errs}" if errs else "")
        + f"; MAIL→250 p50/p99 {pct(res.txn, 50) * 1000:.0f}/{pct(res.txn, 99) * 1000:.0f} ms"
        + f"; client CPU {res.client_cpu:.1f} s"
    )


def run(args: argparse.Namespace) -> Figures:
    from cryptography.fernet import Fernet  # noqa: F401  (fail early if the venv is wrong)

    from tests.support.databases import fresh_postgres
    from tests.support.stack import make_stack
    from tests.support.world import new_world

    fig = Figures()
    n, m = args.messages, args.sessions
    ours, source = args.client in ("ours", "both"), args.client in ("smtp-source", "both")
    say = lambda s: print(f"  .. {s}", file=sys.stderr, flush=True)  # noqa: E731
    binary = ensure_smtp_source(say) if source else ""

    workdir = Path(tempfile.mkdtemp(prefix="inboxlog-intake-bench-", dir=args.workdir))
    msgs_accept: list[tuple[str, bytes]] = []
    try:
        yard: dict[str, LoadResult] = {}
        if ours:
            say(f"building {n} + {n} + {args.latency_messages} messages (~{args.size // 1000} KB)")
            msgs_accept = build_messages("acc", n, seed=1, size=args.size)
            msgs_live = build_messages("live", n, seed=2, size=args.size)
            msgs_lat = build_messages("lat", args.latency_messages, seed=3, size=args.size)
            # --- yardsticks --------------------------------------------------------------------
            for kind in ("fsync", "null"):
                with yardstick(kind, workdir) as port:
                    say(f"yardstick {kind}: {n} messages over {m} sessions")
                    run_load(
                        port, "log@yardstick.example", msgs_accept[: min(n, 200)], m
                    )  # warm up
                    yard[kind] = run_load(port, "log@yardstick.example", msgs_accept, m)
            fig.rows.append(
                (
                    "bare aiosmtpd + file-per-message fsync",
                    fmt_rate(yard["fsync"].accept_rate),
                    describe_load(yard["fsync"]),
                )
            )
            fig.rows.append(
                (
                    "bare aiosmtpd, stores nothing",
                    fmt_rate(yard["null"].accept_rate),
                    describe_load(yard["null"]),
                )
            )

        redis_url, flush_redis = redis_db()
        try:
            with fresh_postgres() as db_url:
                dsn = pg_dsn(db_url)
                stack = make_stack(workdir, db_url, redis_url)
                stack.env.update(
                    INBOXLOG_SWEEP_AFTER_SECONDS="3600",  # no re-enqueues of the deliberate backlog
                    INBOXLOG_SMTP_RATE_PER_MINUTE="100000000",
                    INBOXLOG_SMTP_ACCOUNT_RATE_PER_MINUTE="100000000",
                    INBOXLOG_SMTP_MAX_CONNECTIONS_PER_CLIENT=str(max(50, 2 * m)),
                )
                try:
                    if ours:
                        fig_stack(
                            fig,
                            args,
                            stack,
                            dsn,
                            new_world,
                            msgs_accept,
                            msgs_live,
                            msgs_lat,
                            yard["fsync"].accept_rate,
                            workdir,
                            say,
                        )
                    if source:
                        fig_source(fig, args, binary, stack, dsn, new_world, workdir, say)
                finally:
                    stack.close()
        finally:
            flush_redis()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if msgs_accept:
        avg_size = statistics.mean(len(p) for _, p in msgs_accept)
        fig.notes.append(f"average DATA payload {avg_size / 1000:.1f} KB (our client)")
    return fig


def vacuum_analyze(dsn: str) -> float:
    """``VACUUM (ANALYZE)`` of the bench's database (what autovacuum would do); returns seconds."""
    import psycopg

    t0 = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return time.monotonic() - t0


def fig_source(
    fig: Figures,
    args: argparse.Namespace,
    binary: str,
    stack,
    dsn: str,
    new_world,  # type: ignore[no-untyped-def]
    workdir: Path,
    say,
) -> None:
    """Postfix's smtp-source, ``--source-runs`` runs alternating the fsync yardstick and the
    gateway (worker running) with the same parameters, all on ONE account, which grows."""
    n, m, length = args.source_messages, args.sessions, args.source_length
    world = new_world(stack.sessions)
    sender = SENDER  # the account's admin: passes the gateway's sender verification
    if "gateway" not in stack.procs:
        stack.start_gateway()
    if "worker" not in stack.procs:
        stack.start_worker(args.concurrency)
    groups = {"gateway": stack.procs["gateway"].pid, "worker": stack.procs["worker"].pid}

    def source(port: int, k: int) -> SourceRun:
        return run_smtp_source(
            binary,
            port,
            sender=sender,
            rcpt=world.bcc,
            sessions=m,
            messages=k,
            length=length,
            reuse=args.source_reuse,
        )

    # warm-up: until the gateway's directory knows the new account (a refused run exits non-0)
    deadline, warm = time.monotonic() + 30, 0
    while (r := source(stack.smtp_port, 20)).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"smtp-source warm-up refused: {r.stderr}")
        time.sleep(0.2)
    warm = r.messages
    wait_decisions(dsn, world.account_id, warm, timeout=args.timeout)
    if args.vacuum:
        vacuum_analyze(dsn)
    mode = "VACUUM (ANALYZE) before each run" if args.vacuum else "as is (no VACUUM/ANALYZE)"
    say(
        f"smtp-source: {args.source_runs} × ({n} to the fsync yardstick, {n} to the gateway), {mode}"
    )
    yard_total = gw_total = 0.0
    e2e_rates: list[float] = []
    with yardstick("fsync", workdir) as yport:
        source(yport, 200)  # warm up
        for k in range(1, args.source_runs + 1):
            y = source(yport, n)
            base = count_decisions(dsn, world.account_id)
            counter = NewDecisions(dsn, world.account_id)
            box: dict[str, SourceRun] = {}
            c0 = cpu_snapshot(groups)
            spies = (
                [
                    profile(groups[who], 8, workdir / f"{who}-source-{k}.collapsed.txt")
                    for who in ("gateway", "worker")
                ]
                if args.profile
                else []
            )
            sender_thread = threading.Thread(
                target=lambda box=box: box.setdefault("r", source(stack.smtp_port, n))
            )
            sender_thread.start()
            samples = [(t, base + c) for t, c in counter.wait(n, timeout=args.timeout)]
            counter.close()
            sender_thread.join()
            for spy in spies:
                stop_profile(spy)
            g = box["r"]
            fig.notes.append(
                cpu_note(
                    f"smtp-source run {k}", c0, cpu_snapshot(groups), n, samples[-1][0] - g.started
                )
            )
            decided = samples[-1][1] - base
            e2e = decided / (samples[-1][0] - g.started) if decided else 0.0
            sus = sustained_rate([(t, c - base) for t, c in samples], n)
            ratio = g.rate / y.rate if y.rate else 0.0
            yard_total += y.wall
            gw_total += g.wall
            e2e_rates.append(e2e if decided >= n else 0.0)
            errs = "; ".join(
                f"{who} exit {r.returncode}: {r.stderr}"
                for who, r in (("yardstick", y), ("gateway", g))
                if r.returncode
            )
            fig.rows.append(
                (
                    f"smtp-source run {k}: fsync yardstick / gateway accept",
                    f"{y.rate:,.0f} / {g.rate:,.0f} msg/s",
                    f"{ratio:.2f}× the yardstick; {n} in {y.wall:.1f} s / {g.wall:.1f} s"
                    + (f"; {errs}" if errs else ""),
                )
            )
            fig.rows.append(
                (
                    f"smtp-source run {k}: end-to-end",
                    fmt_rate(e2e),
                    f"smtp-source start → all {decided}/{n} decided; 10–90 % {fmt_rate(sus)}; "
                    f"account holds {samples[-1][1]:,} decisions",
                )
            )
            if args.vacuum:
                fig.notes.append(
                    f"VACUUM (ANALYZE) after smtp-source run {k}: {vacuum_analyze(dsn):.1f} s"
                )
    runs = args.source_runs
    ratio_all = yard_total / gw_total if gw_total else 0.0  # same n per run: rate ratio
    fig.targets.append(
        (
            "smtp-source: gateway accept ≥ 1.0× fsync yardstick",
            f"{ratio_all:.2f}×",
            f"{runs * n / gw_total:,.0f} vs {runs * n / yard_total:,.0f} msg/s over {runs} runs",
            ratio_all >= 1.0,
        )
    )
    fig.targets.append(
        (
            "smtp-source: end-to-end ≥ 600 msg/s in every run",
            f"{min(e2e_rates):,.0f} msg/s",
            " / ".join(f"{r:,.0f}" for r in e2e_rates) + " by run",
            min(e2e_rates) >= 600,
        )
    )
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        outcomes = dict(
            conn.execute(
                "SELECT outcome, count(*) FROM decisions WHERE account_id = %s GROUP BY outcome",
                (world.account_id,),
            ).fetchall()
        )
    per = "one connection per session (-d)" if args.source_reuse else "a new connection per message"
    fig.notes.append(
        f"smtp-source -s {m} -m {n} -l {length} -f {sender} -t <the account's BCC address>: {per}, "
        "no pipelining, one recipient, a 4-line header and an all-X body; "
        f"the worker (-c {args.concurrency}) runs while the gateway is measured; statistics: {mode}; "
        f"the account's decision outcomes {outcomes}"
    )


def fig_stack(
    fig: Figures,
    args: argparse.Namespace,
    stack,
    dsn: str,
    new_world,  # type: ignore[no-untyped-def]
    msgs_accept,
    msgs_live,
    msgs_lat,
    fsync_rate: float,
    workdir: Path,
    say,
) -> None:
    n, m, conc = args.messages, args.sessions, args.concurrency
    w_acc, w_live, w_lat = (new_world(stack.sessions) for _ in range(3))
    stack.start_gateway()
    gw_pid = stack.procs["gateway"].pid
    # warm the gateway (connection pool, directory) on a throwaway account
    w_warm = new_world(stack.sessions)
    time.sleep(2.5)  # let the directory refresh pick up all four accounts
    run_load(
        stack.smtp_port, w_warm.bcc, build_messages("warm", min(n, 200), seed=9, size=args.size), m
    )

    # --- (a) accept rate, worker stopped ---------------------------------------------------
    say(f"(a) gateway accept rate, worker stopped: {n} messages over {m} sessions")
    spy = profile(gw_pid, 30, workdir / "gateway.collapsed.txt") if args.profile else None
    groups = {"gateway": gw_pid}
    c0, t0 = cpu_snapshot(groups), time.monotonic()
    acc = run_load(stack.smtp_port, w_acc.bcc, msgs_accept, m)
    fig.notes.append(cpu_note("(a)", c0, cpu_snapshot(groups), acc.ok, time.monotonic() - t0))
    if spy:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    fig.rows.append(
        ("(a) gateway accept rate, worker stopped", fmt_rate(acc.accept_rate), describe_load(acc))
    )
    ratio = acc.accept_rate / fsync_rate if fsync_rate else 0.0
    fig.targets.append(
        (
            "(a) accept rate ≥ 80 % of bare-fsync yardstick",
            f"{acc.accept_rate:,.0f} vs {0.8 * fsync_rate:,.0f} msg/s",
            f"{ratio:.0%} of yardstick",
            ratio >= 0.8,
        )
    )

    # --- (b1) end-to-end: the worker draining the backlog -----------------------------------
    say(f"(b) worker -c {conc} draining a backlog of {acc.ok + min(n, 200)} stored messages")
    t_start = time.monotonic()
    stack.start_worker(conc)
    t_ready = time.monotonic()
    if args.profile:
        wpid = stack.procs["worker"].pid
        spy = profile(wpid, 25, workdir / "worker.collapsed.txt")
    groups["worker"] = stack.procs["worker"].pid
    c0, t0 = cpu_snapshot(groups), time.monotonic()
    samples = wait_decisions(dsn, w_acc.account_id, acc.ok, timeout=args.timeout)
    fig.notes.append(cpu_note("(b1)", c0, cpu_snapshot(groups), acc.ok, time.monotonic() - t0))
    if args.profile and spy:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    done = samples[-1][1]
    t_first = next((t for t, c in samples if c > 0), samples[-1][0])
    whole = done / (samples[-1][0] - t_first) if samples[-1][0] > t_first else None
    sus = sustained_rate(samples, acc.ok)
    fig.rows.append(
        (
            "(b1) end-to-end, worker draining backlog",
            fmt_rate(sus),
            f"10–90 % of decisions; {done}/{acc.ok} decided, {fmt_rate(whole)} first→last decision; "
            f"worker start {t_ready - t_start:.1f} s",
        )
    )
    # the warm-up account's messages were queued first; make sure they are gone too
    wait_decisions(dsn, w_warm.account_id, min(n, 200), timeout=args.timeout)

    # --- (b2) end-to-end live: gateway and worker together ----------------------------------
    say(f"(b) live: {n} messages over {m} sessions with the worker running")
    box: dict[str, object] = {}
    sender = threading.Thread(
        target=lambda: box.setdefault("r", run_load(stack.smtp_port, w_live.bcc, msgs_live, m))
    )
    c0, t0 = cpu_snapshot(groups), time.monotonic()
    sender.start()
    samples = wait_decisions(dsn, w_live.account_id, n, timeout=args.timeout)
    fig.notes.append(cpu_note("(b2)", c0, cpu_snapshot(groups), n, time.monotonic() - t0))
    sender.join()
    live: LoadResult = box["r"]  # type: ignore[assignment]
    done = samples[-1][1]
    e2e_whole = done / (samples[-1][0] - live.first_mail) if done else 0.0
    sus_live = sustained_rate(samples, live.ok)
    fig.rows.append(
        (
            "(b2) gateway accept rate, worker running",
            fmt_rate(live.accept_rate),
            describe_load(live),
        )
    )
    fig.rows.append(
        (
            "(b2) end-to-end live, worker running",
            fmt_rate(sus_live),
            f"10–90 % of decisions; {done}/{live.ok} decided; {e2e_whole:,.0f} msg/s first MAIL→last decision",
        )
    )
    fig.targets.append(
        (
            "(b) end-to-end ≥ 300 msg/s sustained (live)",
            fmt_rate(sus_live),
            "b2, 10–90 %",
            sus_live is not None and sus_live >= 300,
        )
    )
    fig.targets.append(
        (
            "(b) end-to-end ≥ 300 msg/s sustained (backlog)",
            fmt_rate(sus),
            "b1, 10–90 %",
            sus is not None and sus >= 300,
        )
    )

    # --- (c) latency at a fixed offered rate ------------------------------------------------
    k, rate = len(msgs_lat), args.rate
    say(f"(c) latency: {k} messages at {rate:g}/s offered over {m} sessions")
    watcher = DecisionWatcher(dsn, w_lat.account_id, interval=args.poll)
    watcher.start()
    lat = run_load(stack.smtp_port, w_lat.bcc, msgs_lat, m, rate=rate)
    deadline = time.monotonic() + args.timeout
    while len(watcher.seen_at) < lat.ok and time.monotonic() < deadline:
        time.sleep(0.1)
    watcher.stop()
    lats = [watcher.seen_at[mid] - t for mid, t in lat.acked_at.items() if mid in watcher.seen_at]
    missing = lat.ok - len(lats)
    p50, p99 = pct(lats, 50), pct(lats, 99)
    qt = statistics.mean(watcher.query_times) * 1000 if watcher.query_times else float("nan")
    achieved = lat.ok / lat.span if lat.span else 0.0
    fig.rows.append(
        (
            "(c) 250 → decision row, p50",
            f"{p50 * 1000:,.0f} ms",
            f"{len(lats)} messages" + (f", {missing} never seen" if missing else ""),
        )
    )
    fig.rows.append(
        (
            "(c) 250 → decision row, p99",
            f"{p99 * 1000:,.0f} ms",
            f"max {max(lats, default=float('nan')) * 1000:,.0f} ms; poll every {args.poll * 1000:.0f} ms, "
            f"query {qt:.1f} ms avg",
        )
    )
    fig.rows.append(
        (
            "(c) offered / achieved send rate",
            f"{rate:g} / {achieved:,.0f} msg/s",
            f"schedule lag p99 {pct(lat.sched_lag, 99) * 1000:,.0f} ms; " + describe_load(lat),
        )
    )
    fig.targets.append(
        (
            "(c) p99 250→logged < 1 s at 100 msg/s",
            f"{p99 * 1000:,.0f} ms",
            f"p50 {p50 * 1000:,.0f} ms",
            (p99 < 1.0) if lats and not missing else False,
        )
    )
    fig.notes.append(
        f"latency resolution: decisions polled every {args.poll * 1000:.0f} ms "
        f"(+{qt:.1f} ms query), so each latency is late by up to ~{args.poll * 1000 + qt:.0f} ms"
    )

    # sanity: outcomes and failures
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        outcomes = dict(
            conn.execute("SELECT outcome, count(*) FROM decisions GROUP BY outcome").fetchall()
        )
        failures = conn.execute("SELECT count(*) FROM failures").fetchone()[0]
        stored = dict(
            conn.execute("SELECT status, count(*) FROM stored_messages GROUP BY status").fetchall()
        )
    fig.notes.append(
        f"decision outcomes {outcomes}; stored_messages by status {stored}; failures {failures}"
    )
    if args.profile:
        fig.notes.append(f"py-spy profiles in {workdir}")


def report(fig: Figures, args: argparse.Namespace, wall: float) -> None:
    print()
    print("inboxlog intake benchmark")
    print(f"  machine   {machine()}, PostgreSQL + Redis on loopback")
    print(
        f"  settings  N={args.messages} messages, M={args.sessions} SMTP sessions, ~{args.size // 1000} KB each, "
        f"worker -c {args.concurrency}, latency run {args.latency_messages} at {args.rate:g}/s"
        + (" (--quick)" if args.quick else "")
    )
    print()
    print_figures(fig, wall)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "-n",
        "--messages",
        type=int,
        default=3000,
        help="messages per throughput run (default 3000)",
    )
    ap.add_argument(
        "-m", "--sessions", type=int, default=20, help="concurrent SMTP sessions (default 20)"
    )
    ap.add_argument(
        "--size", type=int, default=10_000, help="approximate message size in bytes (default 10000)"
    )
    ap.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument(
        "--rate", type=float, default=100.0, help="offered rate for the latency run (default 100/s)"
    )
    ap.add_argument(
        "--latency-messages",
        type=int,
        default=None,
        help="messages in the latency run (default 2000; --quick 500)",
    )
    ap.add_argument(
        "--poll", type=float, default=0.02, help="decision polling interval in s (default 0.02)"
    )
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="give up waiting for decisions after this (s)"
    )
    ap.add_argument(
        "--client",
        choices=("ours", "smtp-source", "both"),
        default="both",
        help="load generator: this file's asyncio client, Postfix's smtp-source, or both (default)",
    )
    ap.add_argument(
        "--source-messages",
        type=int,
        default=5000,
        help="messages per smtp-source run (default 5000)",
    )
    ap.add_argument(
        "--source-length", type=int, default=10240, help="smtp-source -l body bytes (default 10240)"
    )
    ap.add_argument(
        "--source-runs", type=int, default=3, help="alternating smtp-source runs (default 3)"
    )
    ap.add_argument(
        "--source-reuse",
        action="store_true",
        help="smtp-source -d: send every message of a session over one connection",
    )
    ap.add_argument(
        "--vacuum",
        action="store_true",
        help="VACUUM (ANALYZE) the database before each smtp-source run (autovacuum stand-in)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=500, 500 in the latency run, 1000 per smtp-source run",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the gateway during (a) and the worker during (b1)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, profiles)")
    ap.add_argument(
        "--workdir",
        default=None,
        help="parent of the work directory (default: the system temp dir)",
    )
    ap.add_argument("--yardstick-server", choices=("fsync", "null"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.yardstick_server:
        serve_yardstick(args.yardstick_server, args.port, Path(args.dir))
        return
    if args.quick:
        args.messages = 500
        args.source_messages = min(args.source_messages, 1000)
    if args.latency_messages is None:
        args.latency_messages = 500 if args.quick else 2000
    if args.profile:
        args.keep = True

    # SIGTERM unwinds like Ctrl-C, so every process, the database and the Redis db are cleaned up.
    signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.monotonic()
    try:
        fig = run(args)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    report(fig, args, time.monotonic() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"  bench process peak RSS {rss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

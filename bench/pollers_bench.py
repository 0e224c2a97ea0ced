# ruff: noqa: E501
"""Pollers benchmark (§8): one `inboxlog poller` process holding a thousand IDLE mailboxes.

One run, on a private Dovecot with N users (TLS by default), a fresh PostgreSQL database and a
Redis db of its own:

  1. the poller runs while N connections are created (`--teams` team inboxes, the rest
     personal), half, then the rest; it takes them, logins staggered; the time until all are
     `active`, and the RSS with half and with all (RSS per mailbox at the margin);
  2. idle window (`--idle-seconds`): nothing arrives and no worker runs; the poller's CPU and
     RSS, Dovecot's CPU, and the database transactions of the whole database (read from
     pg_stat_database through another database, so the reading is not counted);
  3. latency: `inboxlog worker -c 2` runs; `--deliveries` messages are delivered into random
     mailboxes' Maildirs (as an MDA would, one every 1/`--rate` s) while the others stay idle;
     delivery -> stored (the decision's received_at: when the poller stored the message) and
     delivery -> decided (the worker's decision row, seen by polling every 20 ms),
     p50/p99/max.

It starts and cleans up every process, the database, the Redis db and Dovecot, and exits 0
whatever the figures are.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_measure import cpu_of_commands, cpu_snapshot, pct


@dataclass
class Figures:
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def rss_mib(pgid: int) -> float:
    """Resident memory of a process group, MiB (Linux /proc)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            with open(f"/proc/{entry.name}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


DOVECOT = ("dovecot", "imap", "imap-login", "auth", "anvil", "log", "config", "stats")


def dovecot_cpu() -> float:
    """CPU seconds of every Dovecot process on the machine (ours are the only ones)."""
    return cpu_of_commands(DOVECOT)


def xacts(admin_dsn: str, dbname: str) -> int:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
    return int(row[0]) if row else 0


def raise_inotify_instances(wanted: int) -> str | None:
    """Each Dovecot IMAP process in IDLE takes an inotify instance of the mail user; past
    fs.inotify.max_user_instances (128 by default) Dovecot falls back to checking the mailbox
    every 30 s, which would measure Dovecot, not us. Raised when we may."""
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    try:
        now = int(path.read_text())
        if now >= wanted:
            return None
        path.write_text(str(wanted))
        return f"fs.inotify.max_user_instances raised from {now} to {wanted} for Dovecot's IDLE."
    except (OSError, ValueError):
        return (
            "fs.inotify.max_user_instances is below one per mailbox and could not be raised: "
            "Dovecot checks mailboxes beyond it every 30 s."
        )


def deliver(server, user: str, raw: bytes, seq: int) -> None:  # type: ignore[no-untyped-def]
    """Drop a message into the user's INBOX Maildir `new/` as an MDA would."""
    mdir = server.maildir_path(user, "INBOX")
    tmp, new = mdir / "tmp", mdir / "new"
    for d in (tmp, new):
        d.mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.B{seq}P{os.getpid()}.bench"
    path = tmp / name
    path.write_bytes(raw.replace(b"\r\n", b"\n"))
    if server._mail_uid != os.geteuid():
        os.chown(path, server._mail_uid, server._mail_gid)
    path.rename(new / name)


def message(seq: int, to: str) -> tuple[str, bytes]:
    mid = f"pollers-{seq}-{os.getpid()}@customer.example"  # as decisions keep it: no <>
    raw = (
        f"From: Customer {seq} <customer{seq % 97}@customer.example>\r\nTo: {to}\r\n"
        f"Subject: Question {seq} about the order\r\nMessage-ID: <{mid}>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n\r\n"
        f"Hello,\r\nthis is message {seq}.\r\n"
    ).encode()
    return mid, raw


def run(args: argparse.Namespace) -> Figures:
    import sqlalchemy as sa

    from shared.crypto import SecretBox
    from shared.db.models import Connection, Decision
    from tests.support.databases import PG_ADMIN_DSN, fresh_postgres
    from tests.support.dovecot import DovecotServer
    from tests.support.stack import make_stack, redis_broker_url, wait_for
    from tests.support.world import new_world

    fig = Figures()
    n, teams = args.mailboxes, min(args.teams, args.mailboxes)
    say = lambda s: print(f"  .. {s}", file=sys.stderr, flush=True)  # noqa: E731
    workdir = Path(tempfile.mkdtemp(prefix="inboxlog-pollers-bench-"))
    server = None
    try:
        inotify = raise_inotify_instances(n + 200)
        if inotify:
            fig.notes.append(inotify)
        say(f"starting Dovecot for {n} users (tls={args.tls})")
        server = DovecotServer.start(workdir / "dovecot", tls=args.tls, clients=n + 50)
        users = {f"u{i:04d}@ours.example": f"pw-{i}" for i in range(n)}
        server.add_users(users, sign_in=False)
        last = list(users)[-1]
        wait_for(lambda: _can_login(server, last, users[last]), 30)
        with fresh_postgres() as db_url:
            dbname = db_url.rsplit("/", 1)[1]
            extra = {
                "INBOXLOG_POLLER_MAX_CONNECTIONS": str(n),
            }
            if args.tls:
                extra["INBOXLOG_IMAP_CA_FILE"] = str(server.ca_cert_path)
            stack = make_stack(workdir, db_url, redis_broker_url(), **extra)
            stack.env["INBOXLOG_SWEEP_AFTER_SECONDS"] = "3600"
            try:
                world = new_world(stack.sessions)
                box = SecretBox(stack.env["INBOXLOG_SECRET_KEY"])
                port = server.tls_port if args.tls else server.port
                security = "ssl" if args.tls else "none"

                def active() -> int:
                    with stack.sessions() as s:
                        return (
                            s.scalar(
                                sa.select(sa.func.count()).where(Connection.status == "active")
                            )
                            or 0
                        )

                def connect(items: list[tuple[int, str, str]]) -> None:
                    for i, name, pw in items:
                        imap = {"host": "127.0.0.1", "port": port, "security": security,
                                "username": name, "password": pw}  # fmt: skip
                        if i < teams:
                            inbox_id, _ = world.inbox(f"Team {i}", [world.admin_id])
                            world.connect(name, kind="team", inbox_id=inbox_id, imap=imap, box=box)
                        else:
                            uid = world.user(name)
                            world.connect(name, kind="personal", user_id=uid, imap=imap, box=box)

                # RSS per mailbox is measured at the margin — between half the mailboxes and
                # all of them — so the interpreter, its lazily imported modules and the shared
                # TLS context are not counted as the mailboxes' own.
                items = [(i, name, pw) for i, (name, pw) in enumerate(users.items())]
                half = n // 2
                proc = stack.start("poller", "poller")
                say(f"creating {half} connections, the poller taking them")
                connect(items[:half])
                wait_for(
                    lambda: active() >= half, args.connect_timeout, lambda: f"{active()} active"
                )
                time.sleep(10)
                rss_half = rss_mib(proc.pid)
                say(f"{half} active, RSS {rss_half:.0f} MiB; creating {n - half} more")
                t0 = time.monotonic()
                connect(items[half:])
                created = time.monotonic() - t0
                say(f"created in {created:.0f} s; waiting for all active")
                t0 = time.monotonic()
                wait_for(lambda: active() >= n, args.connect_timeout, lambda: f"{active()} active")
                all_active = time.monotonic() - t0
                fig.rows.append(("mailboxes active (IDLE) in one poller", f"{active()} of {n}"))
                fig.rows.append(
                    (
                        "time until the second half were all active (logins staggered)",
                        f"{all_active:.0f} s",
                    )
                )
                # Let the last first cycles settle, and PostgreSQL publish the statistics of the
                # set-up's transactions (a backend may hold them back up to 10 s while idle).
                time.sleep(15)

                say(f"idle window: {args.idle_seconds} s")
                x0, c0, d0 = (
                    xacts(PG_ADMIN_DSN, dbname),
                    cpu_snapshot({"poller": proc.pid}),
                    dovecot_cpu(),
                )
                time.sleep(args.idle_seconds)
                x1, c1, d1 = (
                    xacts(PG_ADMIN_DSN, dbname),
                    cpu_snapshot({"poller": proc.pid}),
                    dovecot_cpu(),
                )
                rss = rss_mib(proc.pid)
                minutes = args.idle_seconds / 60
                cpu = (c1.get("poller", 0) - c0.get("poller", 0)) / args.idle_seconds
                fig.rows += [
                    ("idle poller CPU", f"{cpu * 100:.1f} % of one core ({cpu * 1e6 / n:.0f} µs/s per mailbox)"),
                    ("idle Dovecot CPU (all its processes)", f"{(d1 - d0) / args.idle_seconds * 100:.1f} % of one core"),
                    ("poller RSS", f"{rss:.0f} MiB ({rss_half:.0f} MiB with {half} mailboxes), {threads_of(proc.pid)} threads"),
                    ("RSS per idle mailbox (at the margin)", f"{(rss - rss_half) / (n - half):.3f} MiB"),
                    ("RSS per idle mailbox (all of the process)", f"{rss / n:.3f} MiB"),
                    ("idle DB transactions (whole database)", f"{(x1 - x0) / minutes:.1f} per minute = "
                     f"{(x1 - x0) / minutes / n:.3f} per mailbox per minute"),
                ]  # fmt: skip

                say(f"latency: {args.deliveries} deliveries at {args.rate}/s, worker -c 2")
                stack.start_worker(2)
                rng = random.Random(7)
                sent: dict[
                    str, tuple[float, float, str]
                ] = {}  # Message-ID -> (monotonic, wall, to)
                stored_at: dict[str, float] = {}
                decided_at: dict[str, float] = {}
                names = list(users)
                next_at = time.monotonic()
                seq = 0
                deadline = None
                while True:
                    now = time.monotonic()
                    if seq < args.deliveries and now >= next_at:
                        user = rng.choice(names)
                        mid, raw = message(seq, user)
                        deliver(server, user, raw, seq)
                        sent[mid] = (time.monotonic(), time.time(), user)
                        seq += 1
                        next_at += 1 / args.rate
                        continue
                    pending = [m for m in sent if m not in decided_at]
                    if pending:
                        with stack.sessions() as s:
                            for mid, received_at in s.execute(
                                sa.select(Decision.message_id, Decision.received_at).where(
                                    Decision.message_id.in_(pending)
                                )
                            ):
                                decided_at.setdefault(mid, time.monotonic())
                                stored_at.setdefault(mid, received_at.timestamp())
                    if seq >= args.deliveries:
                        deadline = deadline or time.monotonic() + 120
                        if len(decided_at) == len(sent) or time.monotonic() > deadline:
                            break
                    time.sleep(0.02)
                with stack.sessions() as s:
                    outcomes = dict(
                        s.execute(
                            sa.select(Decision.outcome, sa.func.count()).group_by(Decision.outcome)
                        ).all()
                    )
                missing = [(m, sent[m][2]) for m in sent if m not in decided_at]
                for mid, user in missing[:10]:
                    with stack.sessions() as s:
                        conn = s.scalars(
                            sa.select(Connection).where(Connection.address == user)
                        ).one()
                    fig.notes.append(
                        f"not decided: {mid} to {user}: connection {conn.id} {conn.status} "
                        f"last_error={conn.last_error!r}; Dovecot INBOX has "
                        f"{server.message_count(user, 'INBOX')} messages"
                    )
                st = [stored_at[m] - sent[m][1] for m in sent if m in stored_at]
                dec = [decided_at[m] - sent[m][0] for m in sent if m in decided_at]
                fig.rows += [
                    ("delivery -> stored p50 / p99 / max",
                     f"{pct(st, 50):.2f} / {pct(st, 99):.2f} / {max(st, default=float('nan')):.2f} s"),
                    ("delivery -> decided (logged) p50 / p99 / max",
                     f"{pct(dec, 50):.2f} / {pct(dec, 99):.2f} / {max(dec, default=float('nan')):.2f} s"),
                    ("deliveries decided", f"{len(dec)} of {len(sent)}; outcomes {outcomes}"),
                ]  # fmt: skip
                fig.notes.append(
                    f"{n} mailboxes ({teams} team inboxes, {n - teams} personal), each with INBOX "
                    f"(IDLE) and Sent (a STATUS every INBOXLOG_IMAP_RECHECK_SECONDS=3 s between two "
                    f"IDLEs); {'TLS' if args.tls else 'plain'} IMAP on loopback; Dovecot "
                    f"{'.'.join(map(str, server.version))}; {os.cpu_count()} cores shared by all."
                )
            finally:
                stack.close()
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return fig


def _can_login(server, user: str, pw: str) -> bool:  # type: ignore[no-untyped-def]
    from imapclient import IMAPClient

    try:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=5) as c:
            c.login(user, pw)
        return True
    except Exception:
        return False


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mailboxes", type=int, default=1000)
    p.add_argument("--teams", type=int, default=50)
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--deliveries", type=int, default=300)
    p.add_argument("--rate", type=float, default=10.0, help="deliveries per second")
    p.add_argument("--connect-timeout", type=float, default=300)
    p.add_argument("--plain", dest="tls", action="store_false", help="IMAP without TLS")
    p.add_argument("--quick", action="store_true", help="100 mailboxes, 20 s idle, 50 deliveries")
    args = p.parse_args()
    if args.quick:
        args.mailboxes, args.teams, args.idle_seconds, args.deliveries = 100, 10, 20, 50
    t0 = time.monotonic()
    fig = run(args)
    print(f"\n# bench/pollers — {time.strftime('%Y-%m-%d %H:%M')}, {time.monotonic() - t0:.0f} s\n")
    print("| measurement | figure |\n| --- | --- |")
    for name, value in fig.rows:
        print(f"| {name} | {value} |")
    for note in fig.notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()

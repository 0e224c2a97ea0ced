"""Measuring the processes a benchmark starts: CPU by component from /proc, percentiles,
free ports, stopping process groups, optional py-spy profiles."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pct(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]  # nearest rank


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cpu_snapshot(groups: dict[str, int], dbname: str | None = None) -> dict[str, float]:
    """CPU seconds so far by component (Linux /proc; elsewhere empty): process groups by
    leader pid, this process ("bench"), PostgreSQL backends — only those serving ``dbname``
    when given, else all, with redis-server too — and the whole machine ("machine": all but
    idle and iowait)."""
    out: dict[str, float] = {}
    by_pgid = {pgid: name for name, pgid in groups.items()}
    me = os.getpid()
    for pid, comm, pgid, ticks in processes():
        name = by_pgid.get(pgid) or ("bench" if pid == me else None)
        if name is None and comm.startswith("postgres"):
            name = "postgres" if dbname is None or _serves(str(pid), dbname) else None
        if name is None and dbname is None and comm.startswith("redis-server"):
            name = "redis"
        if name:
            out[name] = out.get(name, 0.0) + ticks / CLK
    with contextlib.suppress(OSError), open("/proc/stat") as fh:
        cpu = [int(x) for x in fh.readline().split()[1:]]
        out["machine"] = (sum(cpu) - cpu[3] - cpu[4]) / CLK
    return out


def processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, command name, process group, CPU ticks so far) of every process (Linux /proc)."""
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                head, _, tail = fh.read().rpartition(")")
        except OSError:
            continue
        f = tail.split()
        yield int(entry.name), head.partition("(")[2], int(f[2]), int(f[11]) + int(f[12])


def cpu_of_commands(names: Iterable[str]) -> float:
    """CPU seconds so far of every process whose command name is one of ``names``."""
    wanted = set(names)
    return sum(ticks for _, comm, _, ticks in processes() if comm in wanted) / CLK


def _serves(pid: str, dbname: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return f" {dbname} ".encode() in fh.read()
    except OSError:
        return False


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """py-spy the process tree into ``out`` when py-spy is installed beside this Python."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return None
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--subprocesses", "--duration", str(int(seconds)),
         "--format", "raw", "--nonblocking", "-o", str(out),
         *os.environ.get("BENCH_PYSPY_ARGS", "").split()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profile(spy: subprocess.Popen | None) -> None:
    if spy is not None and spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(20)


class Vacuumer(threading.Thread):
    """``VACUUM (ANALYZE)`` of one database every ``every`` seconds, standing in for
    PostgreSQL's autovacuum when the server runs with it off (as the shared test server does):
    without it, nothing is ever analyzed — the planner guesses 0.5 % for ``account_id = ?`` and
    reads whole accounts through any index on account_id — and dead rows pile up. A production
    server vacuums and analyzes on its own; ``active`` says whether this one does."""

    def __init__(self, dsn: str, every: float = 10.0) -> None:
        super().__init__(name="vacuumer", daemon=True)
        self.dsn, self.every = dsn, every
        self.stopped = threading.Event()
        self.runs = 0
        self.active = True

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            if conn.execute("SHOW autovacuum").fetchone()[0] == "on":
                self.active = False
                return
            while not self.stopped.wait(self.every):
                conn.execute("VACUUM (ANALYZE)")
                self.runs += 1

    def stop(self) -> str:
        self.stopped.set()
        self.join(120)
        if not self.active:
            return "the server's own autovacuum is on"
        return (
            f"the server runs with autovacuum off: VACUUM (ANALYZE) of the bench's database every "
            f"{self.every:.0f} s stood in for it ({self.runs} runs)"
        )

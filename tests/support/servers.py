"""Private Redis and PostgreSQL servers on ephemeral ports, which a test may stop and restart
without touching the machine's shared services."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.support.processes import free_port


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found[-1]


class PrivatePostgres:
    """A throw-away cluster (initdb in a temp dir), run as the postgres system user."""

    def __init__(self) -> None:
        # Outside pytest's 0700 temp tree: the postgres user must be able to reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="ilog-pg-"))
        self.workdir.chmod(0o711)
        self.port = free_port()
        self.data = self.workdir / "pgdata"
        self.user = pwd.getpwnam("postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        def demote() -> None:
            os.setgid(self.user.pw_gid)
            os.setuid(self.user.pw_uid)

        subprocess.run(
            list(args),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=demote if os.geteuid() == 0 else None,
        )

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.workdir, self.user.pw_uid, self.user.pw_gid)
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        return self

    def start(self) -> PrivatePostgres:
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.workdir / "log"),
            "-o",
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        for _ in range(100):
            try:
                psycopg.connect(
                    f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=1
                ).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError("private postgres did not start")

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

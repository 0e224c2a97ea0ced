"""Runs several `inboxlog` commands as one process tree (for `run` and `demo`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from shared.config import Settings


def child_env(settings: Settings) -> dict[str, str]:
    """Children must agree on the generated secrets: pass them down explicitly."""
    return {
        **os.environ,
        "INBOXLOG_ADMIN_TOKEN": settings.admin_token,
        "INBOXLOG_SECRET_KEY": settings.secret_key,
    }


class Children:
    def __init__(
        self, settings: Settings, commands: Sequence[str], log_path: Path | None = None
    ) -> None:
        env = child_env(settings)
        self.log = log_path.open("ab") if log_path else None
        out = self.log if self.log else None
        self.procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "inboxlog", name],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
            )
            for name in commands
        }

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def stop(self, timeout: float = 30) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.log:
            self.log.close()


def wait_port(host: str, port: int, timeout: float, children: Children) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and children.alive():
        with socket.socket() as s:
            s.settimeout(0.3)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False

"""Ctrl-C always stops `inboxlog status --watch`, promptly — also when the process was started
with SIGINT ignored, as every background job of a non-interactive shell is (how a CI script
that runs the suite in the background starts it, and how it was seen still running 20 s after
SIGINT on both databases)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.support.processes import inboxlog_env

# Bounds sized for a loaded machine: waits end as soon as their condition holds.
START_SECONDS = 90.0
STOP_SECONDS = 30.0
HEADER = "inboxlog status "


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_sigint_stops_status_watch(db_url: str, tmp_path: Path, inherited: str) -> None:
    env = inboxlog_env(
        INBOXLOG_DATABASE_URL=db_url, INBOXLOG_SECRET_KEY=Fernet.generate_key().decode()
    )
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inboxlog", "status", "--watch", "--interval", "0.3"],
            env=env,
            cwd=tmp_path,
            stdout=out,  # a file, never a pipe nobody reads: a full pipe would block the writer
            stderr=err,
            preexec_fn=_ignore_sigint if inherited == "ignored" else None,
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while out_path.read_text().count(HEADER) < 2:  # refreshed at least once
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < deadline, "no second refresh"
                time.sleep(0.1)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {STOP_SECONDS:.0f} s after SIGINT")
            stopped_in = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, err_path.read_text()
    assert "Traceback" not in err_path.read_text()
    print(f"stopped {stopped_in:.2f} s after SIGINT ({inherited})")

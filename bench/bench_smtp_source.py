"""Postfix's ``smtp-source`` as an independent SMTP load generator for ``bench/intake``.

``smtp-source -s S -m N -l L -f FROM -t TO 127.0.0.1:PORT`` opens S parallel sessions and sends
N messages in all, each on a NEW connection (no ``-d``): connect, banner, EHLO, MAIL, RCPT, DATA,
QUIT, no pipelining. Every message has the same shape: a four-line header (From, To, Date and a
Message-Id unique within the run) and an L-byte body of numbered lines of ``X`` — no Subject, no
MIME, one recipient (the one on the envelope, who is also the ``To:``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

CANDIDATES = ("smtp-source", "/usr/sbin/smtp-source", "/usr/bin/smtp-source")


def _which() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _port_25_listening() -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", 25)) == 0


def ensure_smtp_source(say) -> str:  # type: ignore[no-untyped-def]
    """The path of ``smtp-source``, installing Debian's ``postfix`` package when it is missing.

    Installing postfix starts (or tries to start) its daemon; it is stopped again so that nothing
    of it keeps running or listens on port 25."""
    found = _which()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            "smtp-source is missing: install Debian's postfix package (apt-get install postfix)"
        )
    was_listening = _port_25_listening()
    say("installing smtp-source (Debian package postfix)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "postfix"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    if shutil.which("postfix"):
        subprocess.run(["postfix", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not was_listening and _port_25_listening():
        raise RuntimeError("something listens on port 25 after installing postfix: stop it")
    found = _which()
    if not found:
        raise RuntimeError("postfix installed but smtp-source not found")
    return found


@dataclass
class SourceRun:
    messages: int
    started: float  # monotonic, just before smtp-source was started
    wall: float  # smtp-source's run time: first connect to last QUIT, all sessions
    returncode: int
    stderr: str

    @property
    def rate(self) -> float:
        return self.messages / self.wall if self.wall > 0 and self.returncode == 0 else 0.0


def run_smtp_source(
    binary: str,
    port: int,
    *,
    sender: str,
    rcpt: str,
    sessions: int,
    messages: int,
    length: int,
    reuse: bool = False,
    timeout: float = 900.0,
) -> SourceRun:
    """One ``smtp-source`` run against 127.0.0.1:``port``; its wall time is the accept span."""
    cmd = [binary, "-s", str(sessions), "-m", str(messages), "-l", str(length)]
    cmd += ["-M", "source.example", "-f", sender, "-t", rcpt]
    if reuse:
        cmd.append("-d")
    cmd.append(f"127.0.0.1:{port}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    return SourceRun(messages, t0, wall, proc.returncode, proc.stderr.strip()[-400:])

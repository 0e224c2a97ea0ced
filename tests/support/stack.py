"""A real inboxlog stack for end-to-end tests: gateway and Celery worker processes on Redis and
PostgreSQL (or the embedded defaults), plus helpers to send mail over SMTP and wait for results."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import smtplib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import make_engine, make_session_factory
from shared.queueing import QUEUES
from tests.support.brokers import empty_broker
from tests.support.processes import free_port, inboxlog_env, start


@dataclass
class Stack:
    workdir: Path
    db_url: str
    broker_url: str
    env: dict[str, str]
    smtp_port: int
    sessions: sessionmaker[Session]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # -- processes ---------------------------------------------------------------------------
    def start(
        self, name: str, *args: str, module: str = "inboxlog", env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        proc = start(list(args), {**self.env, **(env or {})}, self.workdir, log, module=module)
        self.procs[name] = proc
        return proc

    def start_gateway(self) -> None:
        self.start("gateway", "gateway")
        wait_for(lambda: _port_open(self.smtp_port), 30, lambda: self.log("gateway"))

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.env['INBOXLOG_HTTP_PORT']}"

    def start_api(self, timeout: float = 120.0) -> str:
        """The HTTP API process, once /healthz answers; returns its base URL."""
        self.start("api", "api")
        wait_for(lambda: _healthy(self.api_base), timeout, lambda: self.log("api"))
        return self.api_base

    def new_account(self, name: str = "Acme", admin_email: str = "admin@ours.example") -> str:
        """An account created through the API with the operator token; its admin's token."""
        import httpx

        resp = httpx.post(
            self.api_base + "/v1/accounts",
            headers={"Authorization": f"Bearer {self.env['INBOXLOG_ADMIN_TOKEN']}"},
            json={"name": name, "admin_email": admin_email},
            timeout=30,
        )
        resp.raise_for_status()
        return str(resp.json()["token"])

    def start_worker(
        self, concurrency: int = 2, faults: list[dict[str, Any]] | None = None
    ) -> None:
        """A Celery worker; with ``faults``, one with faults injected into pipeline stages
        (tests/support/faulty_worker.py)."""
        if faults:
            self.start(
                "worker",
                "worker",
                "-c",
                str(concurrency),
                module="tests.support.faulty_worker",
                env={"INBOXLOG_TEST_FAULTS": json.dumps(faults)},
            )
        else:
            self.start("worker", "worker", "-c", str(concurrency))
        wait_for(lambda: "ready." in self.log("worker"), 60, lambda: self.log("worker"))

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children (a Celery worker's pool included)."""
        self.stop(name, signal.SIGKILL)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        # SIGTERM to every process first, then wait: they shut down side by side.
        procs = [p for p in self.procs.values() if p.poll() is None]
        self.procs.clear()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.broker_url.startswith(("redis://127.0.0.1:6379/", "amqp://")):
            # Leave the shared Redis db or the session's vhost as we found them: no tasks
            # behind for the next stack.
            self.empty_broker()

    def empty_broker(self) -> None:
        """Drop every waiting task (a Redis flushdb; a purge of the RabbitMQ queues)."""
        empty_broker(self.broker_url, QUEUES)

    # -- mail --------------------------------------------------------------------------------
    def send(self, raw: bytes, rcpts: list[str], mail_from: str = "sender@example.net") -> dict:
        """Send over a real SMTP session; returns refused recipients (smtplib's dict)."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
            return smtp.sendmail(mail_from, rcpts, raw)

    def dialogue(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)


def _healthy(base: str) -> bool:
    import httpx

    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(
    pred: Callable[[], Any],
    timeout: float,
    describe: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = describe()[-4000:] if describe else ""
            raise AssertionError(f"condition not met within {timeout}s\n{detail}")
        time.sleep(interval)


def redis_broker_url() -> str:
    """A Redis database of its own for this test session, emptied first."""
    db = random.randint(1, 15)
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    return f"redis://127.0.0.1:6379/{db}"


def make_stack(workdir: Path, db_url: str, broker_url: str, **extra: str) -> Stack:
    smtp_port = free_port()
    env = inboxlog_env(
        INBOXLOG_DATABASE_URL=db_url,
        INBOXLOG_BROKER_URL=broker_url,
        INBOXLOG_SECRET_KEY=Fernet.generate_key().decode(),
        INBOXLOG_ADMIN_TOKEN="stack-operator-token",
        INBOXLOG_SMTP_PORT=str(smtp_port),
        INBOXLOG_HTTP_PORT=str(free_port()),
        INBOXLOG_SMTP_RATE_PER_MINUTE="1000000",
        **{
            "INBOXLOG_SWEEP_AFTER_SECONDS": "3",
            # The tests' servers (Dovecot, fakes) live on loopback.
            "INBOXLOG_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
            **extra,
        },
    )
    engine = make_engine(db_url)
    return Stack(workdir, db_url, broker_url, env, smtp_port, make_session_factory(engine))

"""A plain `pip install .` (no lock, no test extras) gives a working inboxlog on PostgreSQL and
Redis (§8): its own `inboxlog` migrates, serves SMTP, HTTP and a Celery worker, and logs a BCC.

This is what catches a dependency the project uses but does not declare: the suite's own venv
has the test extras, whose dependencies can hide it (kombu 5.7's redis transport needs
`packaging`, which only its `redis` extra brings)."""

from __future__ import annotations

import json
import re
import smtplib
import socket
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.fernet import Fernet
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.plain_install import PlainVenv, build_plain_venv, empty_postgres
from tests.support.processes import REPO, free_port, stop, wait_http
from tests.support.stack import redis_broker_url, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ADMIN = "admin@acme.example"
CUSTOMER = "ken@customer.example"


class Processes:
    """The venv's `inboxlog` commands as process groups, each with its log file."""

    def __init__(self, venv: PlainVenv, env: dict[str, str], workdir: Path) -> None:
        self.venv, self.env, self.workdir = venv, env, workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.venv.inboxlog), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-4000:])
        return done.stdout

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with self.log_path(name).open("wb") as out:
            proc = subprocess.Popen(
                [str(self.venv.inboxlog), name, *args],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} (exit {proc.poll()}):\n{self.log(name)}"
            for name, proc in self.procs.items()
        )

    def wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        """Wait for ``pred``; a process that exits meanwhile fails at once, with its log."""

        def alive_and(pred: Callable[[], Any]) -> Any:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            assert not dead, f"{dead} exited:\n{self.logs()[-6000:]}"
            return pred()

        return wait_for(lambda: alive_and(pred), timeout, lambda: self.logs()[-6000:])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc, timeout=30)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> PlainVenv:
    return build_plain_venv(tmp_path_factory.mktemp("plain-install"))


@pytest.fixture
def processes(venv: PlainVenv, tmp_path: Path) -> Iterator[Processes]:
    broker_url = redis_broker_url()
    with empty_postgres() as db_url:
        env = venv.env(
            INBOXLOG_DATABASE_URL=db_url,
            INBOXLOG_BROKER_URL=broker_url,
            INBOXLOG_SECRET_KEY=Fernet.generate_key().decode(),
            INBOXLOG_ADMIN_TOKEN="plain-install-operator-token",
            INBOXLOG_SMTP_PORT=str(free_port()),
            INBOXLOG_HTTP_PORT=str(free_port()),
        )
        procs = Processes(venv, env, tmp_path)
        try:
            yield procs
        finally:
            procs.stop_all()
            db = int(broker_url.rsplit("/", 1)[1])
            redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()


def _pins(lock: str) -> dict[str, str]:
    text = (REPO / lock).read_text()
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.MULTILINE)
    }


def test_the_locks_pin_every_declared_dependency_within_its_bounds() -> None:
    """What scripts/setup, the image and CI install (the locks) agrees with pyproject.toml, and
    the test lock runs the suite on exactly the versions the runtime lock ships."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime, test = _pins("requirements.lock"), _pins("requirements-test.lock")
    for lock, pins, declared in [
        ("requirements.lock", runtime, project["dependencies"]),
        ("requirements-test.lock", test, project["dependencies"]),
        ("requirements-test.lock", test, project["optional-dependencies"]["test"]),
    ]:
        for line in declared:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is declared but not in {lock}"
            assert req.specifier.contains(pins[name], prereleases=True), (lock, line, pins[name])
    assert {name: test.get(name) for name in runtime} == runtime


def test_every_module_imports_from_the_venv_not_the_checkout(venv: PlainVenv) -> None:
    """Also the modules the BCC below does not reach (IMAP poller, DKIM, routing rules...): each
    third-party import they make is a declared dependency."""
    site = venv.site_packages()
    files, errors = venv.import_all("shared", "gateway", "worker", "inboxlog")
    assert errors == {}
    assert {"inboxlog.cli", "worker.imap.client", "gateway.smtp.app"} <= set(files)
    for name, file in files.items():
        path = Path(file).resolve()
        assert path.is_relative_to(site), (name, file, site)
        assert not path.is_relative_to(REPO), (name, file)


def test_plain_install_logs_a_bcc_on_postgresql_and_redis(processes: Processes) -> None:
    env = processes.env
    assert "database is at the latest schema" in processes.run("migrate")
    created = processes.run("create-account", "Acme", ADMIN)
    token = created.split("\ntoken: ", 1)[1].strip()

    smtp_port = int(env["INBOXLOG_SMTP_PORT"])
    api = f"http://127.0.0.1:{env['INBOXLOG_HTTP_PORT']}"
    processes.start("gateway")
    processes.start("worker", "--concurrency", "1")
    api_proc = processes.start("api")
    # Sized for a loaded machine: a cold start of Celery or uvicorn takes seconds there.
    processes.wait(lambda: _port_open(smtp_port), 120)
    processes.wait(lambda: "ready." in processes.log("worker"), 180)
    wait_http(f"{api}/openapi.json", api_proc, processes.log_path("api"), timeout=120)

    headers = {"Authorization": f"Bearer {token}"}
    bcc = httpx.get(f"{api}/v1/account", headers=headers, timeout=30).json()["bcc_address"]
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Admin <{ADMIN}>", f"Ken <{CUSTOMER}>", "Quote"
    msg["Message-ID"] = "<plain-install-1@acme.example>"
    msg.set_content("Here is the quote we talked about.")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as smtp:
        assert smtp.send_message(msg, from_addr=ADMIN, to_addrs=[bcc]) == {}

    def decisions() -> list[dict[str, Any]]:
        resp = httpx.get(f"{api}/v1/decisions", headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]

    [decision] = processes.wait(decisions, 180)
    assert decision["outcome"] == "logged", decision
    assert {p["address"] for p in decision["participants"]} == {CUSTOMER}

    # `inboxlog status` reaches the Redis broker through kombu's transport from this venv too.
    report = json.loads(processes.run("status", "--json"))
    assert report["queues"] and all(q["depth"] is not None for q in report["queues"]), report
    assert report["pipeline"]["done"] == 1, report


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0

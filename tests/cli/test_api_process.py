"""``inboxlog api`` and ``inboxlog run`` as real processes, spoken to over HTTP."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tests.support.processes import free_port, inboxlog_env, start, stop, wait_http


def test_api_process_on_postgres_serves_the_new_user_path(
    postgresql_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = inboxlog_env(
        INBOXLOG_DATABASE_URL=postgresql_url,
        INBOXLOG_HTTP_PORT=str(port),
        INBOXLOG_ADMIN_TOKEN="op-token-xyz",
        INBOXLOG_SECRET_KEY=Fernet.generate_key().decode(),
    )
    log = tmp_path / "api.log"
    proc = start(["api"], env, tmp_path, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc, log)
        op = {"Authorization": "Bearer op-token-xyz"}
        r = httpx.post(
            f"{base}/v1/accounts",
            headers=op,
            json={"name": "Proc", "admin_email": "boss@proc.example"},
        )
        assert r.status_code == 201, r.text
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        r = httpx.post(f"{base}/v1/users", headers=admin, json={"email": "rep@proc.example"})
        assert r.status_code == 201
        rep = {"Authorization": f"Bearer {r.json()['token']}"}
        r = httpx.post(
            f"{base}/v1/connections",
            headers=rep,
            json={"address": "rep@proc.example", "kind": "personal"},
        )
        assert r.status_code == 201
        r = httpx.post(f"{base}/v1/inboxes", headers=admin, json={"name": "Support"})
        inbox_id = r.json()["id"]
        r = httpx.post(
            f"{base}/v1/connections",
            headers=admin,
            json={"address": "REP@proc.example", "kind": "team", "inbox_id": inbox_id},
        )
        assert r.status_code == 409
        assert r.json()["error"]["details"]["holder"]["email"] == "rep@proc.example"
        assert httpx.get(f"{base}/readyz").json()["checks"]["database"] == "ok"
    finally:
        assert stop(proc) in (0, -15)
    assert "op-token-xyz" not in log.read_text()


def test_run_generates_and_prints_operator_token_once(tmp_path: Path) -> None:
    port = free_port()
    env = inboxlog_env(INBOXLOG_HTTP_PORT=str(port), INBOXLOG_SMTP_PORT=str(free_port()))
    log = tmp_path / "run.log"
    proc = start(["run"], env, tmp_path, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, log, timeout=60)
    finally:
        stop(proc)
    token_file = tmp_path / ".inboxlog-admin-token"
    key_file = tmp_path / ".inboxlog-secret-key"
    for f in (token_file, key_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert f"INBOXLOG_ADMIN_TOKEN={token}" in log.read_text().splitlines()
    assert (tmp_path / "inboxlog.db").exists()
    # The CLI creates an account on the same embedded database and prints its token.
    out = subprocess.run(
        [sys.executable, "-m", "inboxlog", "create-account", "Emb", "a@emb.example"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "token: ilg_" in out.stdout


def test_every_command_has_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "inboxlog", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=inboxlog_env(),
    ).stdout
    commands = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert {"migrate", "api", "run", "create-account"} <= set(commands)
    for cmd in commands:
        res = subprocess.run(
            [sys.executable, "-m", "inboxlog", cmd, "--help"],
            capture_output=True,
            text=True,
            env=inboxlog_env(),
        )
        assert res.returncode == 0 and "Usage:" in res.stdout, cmd


def test_postgres_without_secret_key_refuses_to_start(tmp_path: Path) -> None:
    env = inboxlog_env(INBOXLOG_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1/postgres")
    res = subprocess.run(
        [sys.executable, "-m", "inboxlog", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "INBOXLOG_SECRET_KEY is required" in res.stderr

"""The ``inboxlog`` command line: one sub-command per process kind, plus operator tools."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from inboxlog.runtime import build_runtime
from shared.config import ConfigError, ensure_admin_token, load_settings
from shared.db.migrate import upgrade


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """inboxlog: email ingestion for a CRM (SMTP gateway, IMAP pollers, Celery workers, API)."""


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic migrations)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(exc)
    upgrade(settings.database_url)
    click.echo("database is at the latest schema")


@main.command()
@click.option("--host", default=None, help="Bind address (default INBOXLOG_HTTP_HOST).")
@click.option("--port", type=int, default=None, help="Port (default INBOXLOG_HTTP_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from inboxlog.wiring import build_app

    try:
        rt = build_runtime()
    except ConfigError as exc:
        _fail(exc)
    app = build_app(rt)
    uvicorn.run(
        app,
        host=host or rt.settings.http_host,
        port=port if port is not None else rt.settings.http_port,
        log_level=rt.settings.log_level.lower(),
        access_log=False,
    )


@main.command("create-account")
@click.argument("name")
@click.argument("admin_email")
@click.option("--admin-name", default=None, help="Display name of the first admin.")
def create_account(name: str, admin_email: str, admin_name: str | None) -> None:
    """Create an account with its first admin and print the admin's API token."""
    from shared.db.engine import transaction
    from shared.services.accounts import create_account as create

    try:
        rt = build_runtime(generate_admin_token=False)
    except ConfigError as exc:
        _fail(exc)
    with transaction(rt.sessions) as session:
        account, admin, token = create(
            session=session, name=name, admin_email=admin_email, admin_name=admin_name
        )
        account_id, admin_id = account.id, admin.id
    click.echo(f"account {account_id} created; admin user {admin_id} <{admin_email}>")
    click.echo(f"token: {token}")


CHILDREN = ("api",)


@main.command()
def run() -> None:
    """Run everything (API, gateway, worker, pollers) on the embedded defaults."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(exc)
    token, generated = ensure_admin_token(settings)
    if generated:
        click.echo(f"INBOXLOG_ADMIN_TOKEN={token}")
    upgrade(settings.database_url)
    env = {**os.environ, "INBOXLOG_ADMIN_TOKEN": token, "INBOXLOG_SECRET_KEY": settings.secret_key}
    exe = [sys.executable, "-m", "inboxlog"]
    procs = [subprocess.Popen([*exe, child], env=env) for child in CHILDREN]
    click.echo(
        f"inboxlog running: API http://{settings.http_host}:{settings.http_port} "
        f"SMTP {settings.smtp_host}:{settings.smtp_port}"
    )
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
    sys.exit(1 if failed and not stopping else 0)

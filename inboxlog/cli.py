"""The ``inboxlog`` command line: one sub-command per process kind, plus operator tools."""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from inboxlog.runtime import build_runtime
from inboxlog.supervisor import Children
from shared.config import ConfigError, Settings, ensure_admin_token, load_settings
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


@main.command()
def gateway() -> None:
    """Run the SMTP intake gateway."""
    import asyncio

    from gateway.smtp.app import serve
    from shared.queueing import TaskSender

    try:
        rt = build_runtime()
    except ConfigError as exc:
        _fail(exc)
    asyncio.run(serve(rt.settings, rt.sessions, TaskSender(rt.settings)))


@main.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Worker processes (default: CPUs)."
)
@click.option(
    "--pool",
    default="prefork",
    type=click.Choice(["prefork", "threads", "solo"]),
    help="Celery pool implementation.",
)
def worker(concurrency: int | None, pool: str) -> None:
    """Run a Celery worker (with the sweeper) on the intake queue."""
    from inboxlog.worker_main import run_worker

    try:
        rt = build_runtime()
    except ConfigError as exc:
        _fail(exc)
    run_worker(rt, concurrency=concurrency or os.cpu_count() or 1, pool=pool)


@main.command()
def poller() -> None:
    """Run an IMAP poller: sync connected inboxes (shared with other pollers by lease)."""
    from inboxlog.poller_main import run_poller

    try:
        rt = build_runtime()
    except ConfigError as exc:
        _fail(exc)
    run_poller(rt)


@main.command()
@click.argument("connection", type=int)
@click.option(
    "--since",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Store messages the server received on or after this date (YYYY-MM-DD).",
)
def backfill(connection: int, since: object) -> None:
    """Backfill a connection's folders from a date, with a progress bar."""
    from inboxlog.poller_main import run_backfill

    try:
        rt = build_runtime()
    except ConfigError as exc:
        _fail(exc)
    stored = run_backfill(rt, connection, since.date())  # type: ignore[attr-defined]
    click.echo(f"backfill done: {stored} messages stored")


CHILDREN = ("api", "gateway", "worker", "poller")


def _prepare_embedded(print_token: bool) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(exc)
    token, generated = ensure_admin_token(settings)
    if generated and print_token:
        click.echo(f"INBOXLOG_ADMIN_TOKEN={token}")
    upgrade(settings.database_url)
    return settings


@main.command()
def run() -> None:
    """Run everything (API, gateway, worker, pollers) on the embedded defaults."""
    settings = _prepare_embedded(print_token=True)
    children = Children(settings, CHILDREN)
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
        while not stopping and children.alive():
            time.sleep(0.2)
    finally:
        dead = children.dead()
        children.stop()
    if dead and not stopping:
        click.echo(f"error: {', '.join(dead)} exited; stopped everything", err=True)
        sys.exit(1)


@main.command()
@click.option("--keep-running", is_flag=True, help="Leave everything running after the report.")
def demo(keep_running: bool) -> None:
    """Start everything, send sample mail through the gateway, and show what was logged and why."""
    from inboxlog.demo import create_demo_account, report, send_samples, wait_for_decisions
    from inboxlog.runtime import build_runtime
    from inboxlog.supervisor import wait_port

    settings = _prepare_embedded(print_token=False)
    rt = build_runtime()
    log_path = settings.data_dir / "inboxlog-demo.log"
    children = Children(settings, CHILDREN, log_path=log_path)
    try:
        click.echo(f"starting gateway, worker and API (their logs: {log_path}) ...")
        if not wait_port(settings.smtp_host, settings.smtp_port, 60, children):
            raise click.ClickException(
                f"the SMTP gateway did not come up on {settings.smtp_host}:{settings.smtp_port}"
            )
        demo_ids = create_demo_account(rt.sessions, settings.logging_domain)
        click.echo(f"demo account {demo_ids['account_id']}: BCC address {demo_ids['bcc']}")
        sent = send_samples(settings.smtp_host, settings.smtp_port, demo_ids)
        click.echo(f"sent {len(sent)} messages over SMTP; waiting for the worker ...")
        decisions = wait_for_decisions(
            rt.sessions, demo_ids["account_id"], len(sent), 90, children.alive
        )
        report(rt.sessions, demo_ids["account_id"], [label for label, _ in sent], decisions)
        if keep_running:
            click.echo(f"API on http://{settings.http_host}:{settings.http_port}; Ctrl-C stops.")
            while children.alive():
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        children.stop()

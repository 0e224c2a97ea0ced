"""The ``inboxlog`` command line: one sub-command per process kind, plus operator tools."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click

from inboxlog.runtime import build_runtime
from inboxlog.supervisor import Children
from shared.config import ConfigError, Settings, ensure_admin_token, load_settings
from shared.db.migrate import upgrade

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """inboxlog: email ingestion for a CRM (SMTP gateway, IMAP pollers, Celery workers, API)."""


def _fail(exc: Exception) -> NoReturn:
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
        # X-Forwarded-For is believed only from INBOXLOG_TRUSTED_PROXIES (gateway/api/clients):
        # uvicorn's own handling would trust any loopback peer.
        proxy_headers=False,
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
def backfill(connection: int, since: datetime) -> None:
    """Backfill a connection's folders from a date, with a progress bar."""
    from inboxlog.poller_main import run_backfill

    try:
        rt = build_runtime()
    except ConfigError as exc:
        _fail(exc)
    stored = run_backfill(rt, connection, since.date())
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
    from inboxlog.demo_outbound import DEMO_NETWORK, send_tracked
    from inboxlog.runtime import build_runtime
    from inboxlog.supervisor import wait_port

    # The demo's "customer mail server" runs on this machine: let the worker deliver to it.
    os.environ.setdefault("INBOXLOG_ALLOWED_PRIVATE_NETWORKS", DEMO_NETWORK)
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
        if not wait_port(settings.http_host, settings.http_port, 60, children):
            raise click.ClickException("the API did not come up")
        if "INBOXLOG_PUBLIC_URL" not in os.environ:  # tracking links must reach this API
            settings.public_url = f"http://{settings.http_host}:{settings.http_port}"
        send_tracked(rt.sessions, settings, demo_ids["account_id"], demo_ids["alice_id"])
        if keep_running:
            click.echo(f"API on http://{settings.http_host}:{settings.http_port}; Ctrl-C stops.")
            while children.alive():
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        children.stop()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _status_table(report: dict[str, Any]) -> str:
    p, lines = report["pipeline"], []
    depths = ", ".join(
        f"{q['name']} {'unreachable' if q['depth'] is None else q['depth']}"
        for q in report["queues"]
    )
    lines.append(f"queues       {depths}")
    lines.append(
        f"pipeline     stored {p['stored']}  processing {p['processing']}  done {p['done']}  "
        f"failed {p['failed']}  (oldest unprocessed {_age(report['oldest_unprocessed_seconds'])})"
    )
    lines.append(f"failures     {report['unresolved_failures']} unresolved")
    if "gateway" in report:
        g = report["gateway"]
        codes = " ".join(f"{c}:{n}" for c, n in g["by_code"].items()) or "-"
        lines.append(f"gateway      accepted {g['accepted']}  rejected {g['rejected']}  ({codes})")
    lines.append(f"connections  {len(report['connections'])}")
    stopped = [
        c for c in report["connections"] if c["status"] in ("reauth_required", "auth_failed")
    ]
    for c in stopped:
        action = "reconnect it" if c["status"] == "reauth_required" else "set a new password"
        lines.append(f"  ! connection {c['id']} ({c['address']}) is {c['status']}: {action}")
    if report["connections"]:
        lines.append(f"  {'ID':>5}  {'ACCOUNT':>7}  {'KIND':8}  {'STATUS':11}  {'LAG':>6}  ADDRESS")
        for c in report["connections"]:
            lag = _age(c["lag_seconds"]) if c["imap"] else "no imap"
            lines.append(
                f"  {c['id']:>5}  {c['account_id']:>7}  {c['kind']:8}  {c['status']:11}  "
                f"{lag:>6}  {c['address']}"
            )
    return "\n".join(lines)


def _stop_on_sigint() -> threading.Event:
    """Make Ctrl-C (SIGINT) stop a long-running command: always, and at once.

    Installed explicitly because Python leaves SIGINT alone when the process started with it
    ignored — every background job of a non-interactive shell does (`cmd &` in a CI script)
    — and then no KeyboardInterrupt ever comes. The handler sets a flag besides raising, so
    an interrupt raised where Python must swallow it (a finalizer, a callback) still stops the
    loop at its next check. A second Ctrl-C gets the default action: the process ends.
    """
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    return stop


def _unless_stopped(fn: Callable[[], T], stop: threading.Event) -> T | None:
    """``fn()`` in a daemon thread, waited for in short interruptible steps; None when
    ``stop`` is set first. A call blocked in C (a SQLite busy wait, a socket) cannot delay
    Ctrl-C, and a daemon thread does not hold the process open once the command returns."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=run, name="inboxlog-status-read", daemon=True)
    worker.start()
    while worker.is_alive():
        if stop.wait(0.1):
            return None
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


@main.command()
@click.option("--watch", is_flag=True, help="Refresh the table until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds (--watch).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (per refresh) on stdout.")
def status(watch: bool, interval: float, as_json: bool) -> None:
    """Queue depths, pipeline counts, connection health and gateway replies (all accounts)."""
    import json
    from datetime import UTC, datetime

    from shared.metrics import QueueProbe
    from shared.services.ops import status_report

    stop = _stop_on_sigint()
    try:
        rt = build_runtime(generate_admin_token=False)
    except ConfigError as exc:
        _fail(exc)
    probe = QueueProbe(rt.settings.effective_broker_url, cache_seconds=0)

    def read() -> dict[str, Any]:
        with rt.sessions() as session:
            return status_report(session=session, account_id=None, depths=probe.depths())

    try:
        while not stop.is_set():
            report = _unless_stopped(read, stop)
            if report is None:
                return
            if as_json:
                click.echo(json.dumps(report, default=lambda v: v.isoformat()))
            else:
                if watch:
                    click.clear()
                    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                    click.echo(f"inboxlog status  {stamp}  (every {interval:g}s, Ctrl-C stops)")
                click.echo(_status_table(report))
            if not watch or stop.wait(interval):
                return
    except KeyboardInterrupt:
        pass


@main.group()
def failures() -> None:
    """Permanent processing failures: list them, retry them."""


@failures.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved failures.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout.")
def failures_list(include_resolved: bool, limit: int, as_json: bool) -> None:
    """List failures, newest first (unresolved only unless --all).

    The error text of personal-inbox mail is its owner's alone (§6, C4): here it shows as
    hidden, with the connection it came from; the owner reads it in the API.
    """
    import json

    from shared.services.failures import OPERATOR, failure_view, list_failures

    try:
        rt = build_runtime(generate_admin_token=False)
    except ConfigError as exc:
        _fail(exc)
    with rt.sessions() as session:
        rows = [
            failure_view(f, OPERATOR)
            for f in list_failures(
                session=session, viewer=OPERATOR, include_resolved=include_resolved, limit=limit
            )
        ]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no failures" if include_resolved else "no unresolved failures")
        return
    click.echo(f"{'ID':>6}  {'CREATED':20}  {'STORED':>7}  {'STAGE':10}  {'TRIES':>5}  ERROR")
    for r in rows:
        created = r["created_at"].replace("T", " ")
        mark = " (resolved)" if r["resolved_at"] else ""
        error = (
            f"(personal mail of connection {r['connection_id']}: hidden)"
            if r["redacted"]
            else r["error"][:100]
        )
        click.echo(
            f"{r['id']:>6}  {created:20}  {r['stored_message_id']:>7}  {r['stage']:10}  "
            f"{r['attempts']:>5}  {error}{mark}"
        )


@failures.command("retry")
@click.argument("failure_id", type=int, required=False)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    default=None,
    help="Retry every unresolved failure recorded at or after this UTC time.",
)
def failures_retry(failure_id: int | None, since: datetime | None) -> None:
    """Put failed messages back into the pipeline (one by ID, or all --since a time)."""
    from datetime import UTC

    from shared.db.engine import transaction
    from shared.errors import DomainError
    from shared.queueing import TaskSender
    from shared.services.failures import retry_failure, retry_failures_since

    if (failure_id is None) == (since is None):
        raise click.UsageError("give a FAILURE_ID or --since, not both")
    try:
        rt = build_runtime(generate_admin_token=False)
    except ConfigError as exc:
        _fail(exc)
    try:
        with transaction(rt.sessions) as session:
            if failure_id is not None:
                one = retry_failure(session=session, account_id=None, failure_id=failure_id)
                ids = [one] if one is not None else []
            else:
                assert since is not None  # checked above: exactly one of the two is given
                after = since.replace(tzinfo=UTC)
                ids = retry_failures_since(session=session, account_id=None, since=after)
    except DomainError as exc:
        _fail(exc)
    # Enqueued after the commit; what the broker does not take, the sweeper re-enqueues.
    sent = TaskSender(rt.settings).process(ids) if ids else 0
    click.echo(f"{len(ids)} message(s) back in the pipeline, {sent} enqueued")

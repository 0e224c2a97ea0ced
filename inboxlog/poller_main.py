"""Wires the IMAP poller and the backfill command to the runtime."""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Callable
from datetime import date
from typing import Any

import click
from imapclient import IMAPClient

from inboxlog.runtime import Runtime
from shared import counters
from shared.db.base import utcnow
from shared.netsafety import parse_networks
from shared.networks import Networks
from shared.oauth.tokens import TokenKeeper
from shared.queueing import Enqueuer, TaskSender
from worker.imap.backfill import backfill_folders
from worker.imap.client import open_session
from worker.imap.errors import SessionDue, describe
from worker.imap.poller import Poller
from worker.imap.session import PollerConfig
from worker.imap.signin import signin_settings
from worker.imap.snapshot import Snapshot, folders_to_sync, read_snapshot
from worker.imap.sync import Target


def allowed_networks(rt: Runtime) -> Networks:
    """INBOXLOG_ALLOWED_PRIVATE_NETWORKS; a malformed entry stops the command with its name."""
    try:
        return parse_networks(rt.settings.allowed_private_networks)
    except ValueError as exc:
        raise click.ClickException(f"INBOXLOG_ALLOWED_PRIVATE_NETWORKS: {exc}") from exc


def token_keeper(rt: Runtime, allowed: Networks) -> TokenKeeper | None:
    """OAuth access tokens (§10) for the providers configured; None when there are none."""
    providers = rt.settings.oauth_providers()
    if not providers:
        return None
    return TokenKeeper(
        rt.sessions,
        rt.box,
        providers,
        allowed=allowed,
        ca_file=rt.settings.imap_ca_file or None,
    )


def poller_config(rt: Runtime) -> PollerConfig:
    allowed = allowed_networks(rt)
    return PollerConfig(
        poll_seconds=rt.settings.poll_seconds,
        ca_file=rt.settings.imap_ca_file or None,
        fetch_batch=rt.settings.imap_fetch_batch,
        fetch_bytes=rt.settings.imap_fetch_bytes,
        max_message_bytes=rt.settings.max_message_bytes,
        recheck_seconds=rt.settings.imap_recheck_seconds,
        allowed_networks=allowed,
        tokens=token_keeper(rt, allowed),
    )


def raise_open_files_limit(wanted: int) -> None:
    """Each mailbox holds a socket and a waker: lift the soft limit on open files (often
    1,024) towards the hard one, as far as ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_poller(rt: Runtime) -> None:
    config = poller_config(rt)
    enqueuer = Enqueuer(TaskSender(rt.settings))
    poller = Poller(
        rt.sessions,
        rt.box,
        on_stored=enqueuer.submit,
        config=config,
        lease_ttl=rt.settings.poller_lease_seconds,
        max_connections=rt.settings.poller_max_connections,
    )
    raise_open_files_limit(3 * rt.settings.poller_max_connections + 256)

    def _stop(*_: Any) -> None:
        poller.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    counters.start_flusher(rt.sessions)  # messages received (and placeholders) for /metrics
    try:
        poller.run()
    finally:
        enqueuer.close()
        counters.stop_flusher()


def run_backfill(rt: Runtime, connection_id: int, since: date) -> int:
    """Backfill with a progress bar; an OAuth session signs in again whenever its token is
    due (what was stored is skipped on the next round by the stored-message key)."""
    from tqdm import tqdm

    snap = read_snapshot(rt.sessions, rt.box, connection_id)
    if snap is None:
        raise click.ClickException(
            f"connection {connection_id} does not exist or has no IMAP settings"
        )
    config = poller_config(rt)
    enqueuer = Enqueuer(TaskSender(rt.settings))
    bar = tqdm(total=0, unit="msg", desc=f"connection {connection_id}")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    stored = 0
    try:
        while True:
            client, due = _backfill_session(connection_id, snap, config)
            try:
                targets = [
                    Target(connection_id, snap.account_id, snap.kind, snap.inbox_id, f, role)
                    for f, role in folders_to_sync(client, snap.settings.folders)
                ]
                stored += backfill_folders(
                    client,
                    rt.sessions,
                    targets,
                    since,
                    owner=None,
                    on_stored=enqueuer.submit,
                    progress=progress,
                    limits=config.limits,
                    due=due,
                )
                return stored
            except SessionDue:
                continue  # the token is due: a new session with a fresh one
            finally:
                with contextlib.suppress(Exception):  # the session may already be gone
                    client.logout()
    finally:
        bar.close()
        enqueuer.close()


def _backfill_session(
    connection_id: int, snap: Snapshot, config: PollerConfig
) -> tuple[IMAPClient, Callable[[], bool]]:
    try:
        settings, token = signin_settings(connection_id, snap, config.tokens)
        client = open_session(settings, allowed=config.allowed_networks, ca_file=config.ca_file)
    except Exception as exc:  # our words, never the server's (§6)
        found = describe(exc, oauth=snap.oauth_provider is not None)
        raise click.ClickException(f"connection {connection_id}: {found}") from exc
    if token is None:
        return client, lambda: False
    refresh_at = token.refresh_at
    return client, lambda: utcnow() >= refresh_at

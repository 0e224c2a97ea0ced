"""Wires the IMAP poller and the backfill command to the runtime."""

from __future__ import annotations

import signal
from datetime import date
from typing import Any

import click

from inboxlog.runtime import Runtime
from shared import counters
from shared.netsafety import parse_networks
from shared.networks import Networks
from shared.queueing import Enqueuer, TaskSender
from worker.imap.backfill import backfill_folders
from worker.imap.client import open_session
from worker.imap.errors import describe
from worker.imap.poller import Poller
from worker.imap.session import PollerConfig
from worker.imap.snapshot import folders_to_sync, read_snapshot
from worker.imap.sync import Target


def allowed_networks(rt: Runtime) -> Networks:
    """INBOXLOG_ALLOWED_PRIVATE_NETWORKS; a malformed entry stops the command with its name."""
    try:
        return parse_networks(rt.settings.allowed_private_networks)
    except ValueError as exc:
        raise click.ClickException(f"INBOXLOG_ALLOWED_PRIVATE_NETWORKS: {exc}") from exc


def poller_config(rt: Runtime) -> PollerConfig:
    return PollerConfig(
        poll_seconds=rt.settings.poll_seconds,
        ca_file=rt.settings.imap_ca_file or None,
        fetch_batch=rt.settings.imap_fetch_batch,
        fetch_bytes=rt.settings.imap_fetch_bytes,
        max_message_bytes=rt.settings.max_message_bytes,
        allowed_networks=allowed_networks(rt),
    )


def run_poller(rt: Runtime) -> None:
    config = poller_config(rt)
    enqueuer = Enqueuer(TaskSender(rt.settings))
    poller = Poller(
        rt.sessions,
        rt.box,
        on_stored=enqueuer.submit,
        config=config,
        lease_ttl=rt.settings.poller_lease_seconds,
    )

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
    from tqdm import tqdm

    snap = read_snapshot(rt.sessions, rt.box, connection_id)
    if snap is None:
        raise click.ClickException(
            f"connection {connection_id} does not exist or has no IMAP settings"
        )
    config = poller_config(rt)
    enqueuer = Enqueuer(TaskSender(rt.settings))
    try:
        client = open_session(
            snap.settings, allowed=config.allowed_networks, ca_file=config.ca_file
        )
    except Exception as exc:  # our words, never the server's (§6)
        enqueuer.close()
        raise click.ClickException(f"connection {connection_id}: {describe(exc)}") from exc
    bar = tqdm(total=0, unit="msg", desc=f"connection {connection_id}")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        targets = [
            Target(connection_id, snap.account_id, snap.kind, snap.inbox_id, f, role)
            for f, role in folders_to_sync(client, snap.settings.folders)
        ]
        return backfill_folders(
            client,
            rt.sessions,
            targets,
            since,
            owner=None,
            on_stored=enqueuer.submit,
            progress=progress,
            limits=config.limits,
        )
    finally:
        bar.close()
        client.logout()
        enqueuer.close()

"""Wires the IMAP poller and the backfill command to the runtime."""

from __future__ import annotations

import signal
from datetime import date
from typing import Any

import click

from inboxlog.runtime import Runtime
from shared.queueing import Enqueuer, TaskSender
from worker.imap.backfill import backfill_folders
from worker.imap.client import open_session
from worker.imap.poller import Poller
from worker.imap.session import PollerConfig, folders_to_sync, read_snapshot
from worker.imap.sync import Target


def poller_config(rt: Runtime) -> PollerConfig:
    return PollerConfig(
        poll_seconds=rt.settings.poll_seconds,
        ca_file=rt.settings.imap_ca_file or None,
        fetch_batch=rt.settings.imap_fetch_batch,
    )


def run_poller(rt: Runtime) -> None:
    enqueuer = Enqueuer(TaskSender(rt.settings))
    poller = Poller(
        rt.sessions,
        rt.box,
        on_stored=enqueuer.submit,
        config=poller_config(rt),
        lease_ttl=rt.settings.poller_lease_seconds,
    )

    def _stop(*_: Any) -> None:
        poller.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    poller.run()
    enqueuer.close()


def run_backfill(rt: Runtime, connection_id: int, since: date) -> int:
    from tqdm import tqdm

    snap = read_snapshot(rt.sessions, rt.box, connection_id)
    if snap is None:
        raise click.ClickException(
            f"connection {connection_id} does not exist or has no IMAP settings"
        )
    enqueuer = Enqueuer(TaskSender(rt.settings))
    client = open_session(snap.settings, ca_file=rt.settings.imap_ca_file or None)
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
        )
    finally:
        bar.close()
        client.logout()
        enqueuer.close()

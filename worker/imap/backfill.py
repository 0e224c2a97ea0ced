"""Backfill: store the messages a folder received since a date that sit below the cursor
(the regular sync owns everything above it). Already-stored UIDs are skipped by constraint."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from imapclient import IMAPClient
from sqlalchemy.orm import Session, sessionmaker

from worker.imap.cursor import load_cursor
from worker.imap.sync import FetchLimits, Target, examine, fetch_and_store, missing_since


def pending_uids(
    client: IMAPClient, sessions: sessionmaker[Session], t: Target, since: date
) -> tuple[int, list[int]]:
    view = examine(client, t.folder)
    with sessions() as session:
        cursor = load_cursor(session, t.connection_id, t.folder)
    ceiling = cursor.last_uid if cursor and cursor.uidvalidity == view.uidvalidity else None
    return view.uidvalidity, missing_since(client, sessions, t, view.uidvalidity, since, ceiling)


def backfill_folders(
    client: IMAPClient,
    sessions: sessionmaker[Session],
    targets: list[Target],
    since: date,
    *,
    owner: str | None,
    on_stored: Callable[[list[int]], None],
    progress: Callable[[int, int], None] | None = None,
    limits: FetchLimits | None = None,
    due: Callable[[], bool] | None = None,
) -> int:
    plans = [(t, *pending_uids(client, sessions, t, since)) for t in targets]
    total = sum(len(uids) for _, _, uids in plans)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    stored = 0
    for t, uidvalidity, uids in plans:
        if not uids:
            continue
        examine(client, t.folder)
        stored += fetch_and_store(
            client,
            sessions,
            t,
            uidvalidity,
            uids,
            owner=owner,
            advance=False,
            on_stored=on_stored,
            progress=step,
            limits=limits,
            due=due,
        )
    return stored

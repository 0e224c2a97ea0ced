"""Read-only sync of one folder: EXAMINE, UID SEARCH, FETCH BODY.PEEK[] — flags never change.

A new connection starts at the current end of each folder (or backfills ``imap.since``); a
UIDVALIDITY change re-syncs the folder, and the intake's unique (connection, folder,
UIDVALIDITY, UID) key plus the logged-email identity keep that free of duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

from imapclient import IMAPClient
from sqlalchemy.orm import Session, sessionmaker

from shared.intake import IncomingMessage
from worker.imap.cursor import load_cursor, set_cursor, store_and_advance
from worker.imap.fetch import fetch_bodies

log = logging.getLogger("inboxlog.imap")

FETCH_BATCH = 200


@dataclass(frozen=True)
class Target:
    """Where fetched messages go: the connection, its kind and inbox, and the folder's role."""

    connection_id: int
    account_id: int
    source: str  # "team" | "personal"
    inbox_id: int | None
    folder: str
    role: str  # "inbox" | "sent"


@dataclass
class FolderView:
    """What the server says about a folder right now (from EXAMINE or STATUS)."""

    uidvalidity: int
    uidnext: int | None


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def fetch_and_store(
    client: IMAPClient,
    sessions: sessionmaker[Session],
    t: Target,
    uidvalidity: int,
    uids: list[int],
    *,
    owner: str | None,
    advance: bool,
    on_stored: Callable[[list[int]], None],
    progress: Callable[[int], None] | None = None,
    batch_size: int = FETCH_BATCH,
) -> int:
    """Fetch ``uids`` in batches; each batch is stored and the cursor advanced atomically.

    The next batch is fetched while the previous one commits (one store thread, so commits stay
    in UID order and the cursor only moves past what is durably stored).
    """

    def store(items: list[IncomingMessage], batch: list[int]) -> int:
        with sessions() as session, session.begin():
            ids = store_and_advance(
                session,
                connection_id=t.connection_id,
                owner=owner,
                folder=t.folder,
                uidvalidity=uidvalidity,
                items=items,
                advance_to=max(batch) if advance else None,
            )
        on_stored(ids)
        if progress:
            progress(len(batch))
        return len(ids)

    stored = 0
    pending: Future[int] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-store") as pool:
        for batch in _chunks(sorted(uids), batch_size):
            bodies = fetch_bodies(client, batch)
            items = [
                IncomingMessage(
                    account_id=t.account_id,
                    source=t.source,
                    raw=bodies[uid],
                    inbox_id=t.inbox_id,
                    connection_id=t.connection_id,
                    folder=t.folder,
                    folder_role=t.role,
                    uidvalidity=uidvalidity,
                    uid=uid,
                )
                for uid in batch
                if uid in bodies
            ]
            if pending is not None:
                stored += pending.result()  # in order; re-raises a failed commit
            pending = pool.submit(store, items, batch)
        if pending is not None:
            stored += pending.result()
    return stored


def examine(client: IMAPClient, folder: str) -> FolderView:
    info = client.select_folder(folder, readonly=True)  # EXAMINE: read-only (RFC 3501 6.3.2)
    return FolderView(
        int(info[b"UIDVALIDITY"]), int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None
    )


def status(client: IMAPClient, folder: str) -> FolderView:
    """The cheap no-new-mail check: one STATUS round trip, whatever the folder's size."""
    st = client.folder_status(folder, [b"UIDNEXT", b"UIDVALIDITY"])
    return FolderView(int(st[b"UIDVALIDITY"]), int(st[b"UIDNEXT"]))


def sync_folder(
    client: IMAPClient,
    sessions: sessionmaker[Session],
    t: Target,
    *,
    owner: str | None,
    since: date | None,
    resync_since: date,
    on_stored: Callable[[list[int]], None],
    batch_size: int = FETCH_BATCH,
) -> int:
    """Bring one folder up to date; returns how many messages were newly stored."""
    with sessions() as session:
        cursor = load_cursor(session, t.connection_id, t.folder)
    view = examine(client, t.folder)

    def fetch(uids: list[int]) -> int:
        return fetch_and_store(
            client,
            sessions,
            t,
            view.uidvalidity,
            uids,
            owner=owner,
            advance=True,
            on_stored=on_stored,
            batch_size=batch_size,
        )

    if cursor is None:
        # A new connection starts at the current end, unless imap.since asks for a backfill.
        end = (view.uidnext - 1) if view.uidnext else max(client.search(["ALL"]) or [0])
        uids = client.search(["SINCE", since]) if since else []
        with sessions() as session, session.begin():
            set_cursor(session, t.connection_id, t.folder, view.uidvalidity, 0 if uids else end)
        if not uids:
            return 0
        stored = fetch(uids)
        with sessions() as session, session.begin():
            store_and_advance(
                session,
                connection_id=t.connection_id,
                owner=owner,
                folder=t.folder,
                uidvalidity=view.uidvalidity,
                items=(),
                advance_to=end,
            )
        return stored
    if cursor.uidvalidity != view.uidvalidity:
        log.warning("connection=%s folder UIDVALIDITY changed: resyncing", t.connection_id)
        with sessions() as session, session.begin():
            set_cursor(session, t.connection_id, t.folder, view.uidvalidity, 0)
        uids = client.search(["SINCE", resync_since])
        return fetch(uids)
    if view.uidnext is not None and view.uidnext - 1 <= cursor.last_uid:
        return 0
    # "n:*" always includes the highest UID, even below n (RFC 3501 6.4.8): filter.
    uids = [u for u in client.search(["UID", f"{cursor.last_uid + 1}:*"]) if u > cursor.last_uid]
    return fetch(uids)

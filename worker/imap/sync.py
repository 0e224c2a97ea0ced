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

import sqlalchemy as sa
from imapclient import IMAPClient
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import StoredMessage
from shared.intake import IncomingMessage
from worker.imap.cursor import (
    Cursor,
    finish_backfill,
    load_cursor,
    set_cursor,
    store_and_advance,
)
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


def missing_since(
    client: IMAPClient,
    sessions: sessionmaker[Session],
    t: Target,
    uidvalidity: int,
    since: date,
    ceiling: int | None,
) -> list[int]:
    """UIDs the folder received on or after ``since`` (IMAP SINCE: internal date), up to
    ``ceiling``, that are not stored yet for this UIDVALIDITY."""
    with sessions() as session:
        have = set(
            session.scalars(
                sa.select(StoredMessage.uid).where(
                    StoredMessage.connection_id == t.connection_id,
                    StoredMessage.folder == t.folder,
                    StoredMessage.uidvalidity == uidvalidity,
                )
            )
        )
    return [
        u
        for u in client.search(["SINCE", since])
        if u not in have and (ceiling is None or u <= ceiling)
    ]


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
    """Bring one folder up to date; returns how many messages were newly stored.

    New mail above the cursor first, then any backfill the folder still owes below it.
    """
    with sessions() as session:
        cursor = load_cursor(session, t.connection_id, t.folder)
    view = examine(client, t.folder)

    def fetch(uids: list[int], advance: bool) -> int:
        return fetch_and_store(
            client,
            sessions,
            t,
            view.uidvalidity,
            uids,
            owner=owner,
            advance=advance,
            on_stored=on_stored,
            batch_size=batch_size,
        )

    if cursor is None or cursor.uidvalidity != view.uidvalidity:
        # A new connection starts at the current end of the folder (§6), owing a backfill from
        # imap.since when set; after a UIDVALIDITY change every UID is new, so the folder is
        # re-synced as a backfill from the connection's start (duplicates are stopped by the
        # stored-message key and the logged-email identity). The cursor and the pending
        # backfill are saved before anything is fetched: a failure half-way resumes the
        # backfill instead of reading the folder from UID 1.
        if cursor is not None:
            log.warning("connection=%s folder UIDVALIDITY changed: resyncing", t.connection_id)
        end = (view.uidnext - 1) if view.uidnext else max(client.search(["ALL"]) or [0])
        pending = since if cursor is None else resync_since
        with sessions() as session, session.begin():
            set_cursor(session, t.connection_id, t.folder, view.uidvalidity, end, pending)
        cursor = Cursor(view.uidvalidity, end, pending)
    stored = 0
    if view.uidnext is None or view.uidnext - 1 > cursor.last_uid:
        # "n:*" always includes the highest UID, even below n (RFC 3501 6.4.8): filter.
        found = client.search(["UID", f"{cursor.last_uid + 1}:*"])
        stored += fetch([u for u in found if u > cursor.last_uid], True)
    if cursor.backfill_since is not None:
        uids = missing_since(
            client, sessions, t, view.uidvalidity, cursor.backfill_since, cursor.last_uid
        )
        stored += fetch(uids, False)
        with sessions() as session, session.begin():
            finish_backfill(session, t.connection_id, t.folder)
    return stored

"""Read-only sync of one folder: EXAMINE, UID SEARCH, FETCH RFC822.SIZE then BODY.PEEK[] —
flags never change.

A new connection starts at the current end of each folder (or backfills ``imap.since``); a
UIDVALIDITY change re-syncs the folder, and the intake's unique (connection, folder,
UIDVALIDITY, UID) key plus the logged-email identity keep that free of duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
from worker.imap.errors import SessionDue
from worker.imap.fetch import fetch_bodies, fetch_sizes
from worker.imap.placeholders import MISSING_ON_SERVER, TOO_LARGE, Unfetched

log = logging.getLogger("inboxlog.imap")

FETCH_BATCH = 200
FETCH_BYTES = 64 * 1024 * 1024
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
SIZE_WINDOW = 5000  # UIDs per RFC822.SIZE request: a few hundred KB of answer at most


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


@dataclass(frozen=True)
class FetchLimits:
    """How much one FETCH may bring, and the largest message downloaded at all (§6 Bounded)."""

    batch: int = FETCH_BATCH  # messages per FETCH (and per commit)
    batch_bytes: int = FETCH_BYTES  # bytes per FETCH, by RFC822.SIZE
    max_message: int = MAX_MESSAGE_BYTES  # larger: recorded failed/too_large, not downloaded


@dataclass
class Batch:
    """A UID range handled in one FETCH and one commit: the UIDs to download, and the ones
    recorded without downloading (code and announced size) that the cursor passes with it."""

    fetch: list[int] = field(default_factory=list)
    skipped: dict[int, tuple[str, int]] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)  # of the UIDs to download
    fetch_bytes: int = 0

    def __len__(self) -> int:
        return len(self.fetch) + len(self.skipped)

    @property
    def last_uid(self) -> int:
        return max([*self.fetch, *self.skipped])


def plan_batches(uids: Iterable[int], sizes: dict[int, int], limits: FetchLimits) -> list[Batch]:
    """Cut ``uids`` (with their RFC822.SIZE; absent: the server did not return it) into batches
    of at most ``limits.batch`` messages and ``limits.batch_bytes`` bytes to download — a
    message larger than the byte budget but allowed goes alone. Batches are consecutive UID
    ranges, so each commit moves the cursor over exactly what it recorded."""
    batches: list[Batch] = []
    cur = Batch()
    for uid in sorted(set(uids)):
        size = sizes.get(uid)
        fetchable = size is not None and size <= limits.max_message
        if len(cur) and (
            len(cur) >= limits.batch
            or (fetchable and cur.fetch and cur.fetch_bytes + (size or 0) > limits.batch_bytes)
        ):
            batches.append(cur)
            cur = Batch()
        if size is None:
            cur.skipped[uid] = (MISSING_ON_SERVER, 0)
        elif not fetchable:
            cur.skipped[uid] = (TOO_LARGE, size)
        else:
            cur.fetch.append(uid)
            cur.sizes[uid] = size
            cur.fetch_bytes += size
    if len(cur):
        batches.append(cur)
    return batches


def _sizes(client: IMAPClient, uids: list[int]) -> dict[int, int]:
    """RFC822.SIZE by UID; a UID the server leaves out is asked for once more."""
    sizes = fetch_sizes(client, uids)
    missing = [u for u in uids if u not in sizes]
    if missing:
        sizes.update(fetch_sizes(client, missing))
    return sizes


def _download(client: IMAPClient, batch: Batch, limits: FetchLimits) -> dict[int, bytes]:
    """The batch's bodies; a UID the server does not return is asked for once more, then
    recorded missing_on_server; a body larger than announced (and than the limit) too_large."""
    got = fetch_bodies(client, batch.fetch, max_bytes=limits.max_message)
    missing = [u for u in batch.fetch if u not in got.bodies and u not in got.oversized]
    if missing:
        again = fetch_bodies(client, missing, max_bytes=limits.max_message)
        got.bodies.update(again.bodies)
        got.oversized.update(again.oversized)
    for uid in batch.fetch:
        if uid in got.oversized:
            batch.skipped[uid] = (TOO_LARGE, got.oversized[uid])
        elif uid not in got.bodies:
            batch.skipped[uid] = (MISSING_ON_SERVER, batch.sizes.get(uid, 0))
    return got.bodies


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
    limits: FetchLimits | None = None,
    due: Callable[[], bool] | None = None,
) -> int:
    """Fetch ``uids`` in batches; each batch is stored and the cursor advanced atomically.
    ``due``: true once the session must sign in again (an OAuth token's refresh time): the
    batches stored so far are kept and SessionDue is raised before the next download.

    Sizes first (``RFC822.SIZE``, nothing downloaded), then batches bounded by count and
    bytes; a message over the limit, or one the server lists but never returns, is recorded
    with its reason in the same commit (never skipped silently). The next batch is fetched
    while the previous one commits (one store thread, so commits stay in UID order and the
    cursor only moves past what is durably recorded). Returns how many messages were stored
    for processing.
    """
    limits = limits or FetchLimits()

    def store(items: list[IncomingMessage], unfetched: list[Unfetched], batch: Batch) -> int:
        with sessions() as session, session.begin():
            ids = store_and_advance(
                session,
                connection_id=t.connection_id,
                owner=owner,
                folder=t.folder,
                uidvalidity=uidvalidity,
                items=items,
                advance_to=batch.last_uid if advance else None,
                unfetched=unfetched,
            )
        on_stored(ids)
        if progress:
            progress(len(batch))
        return len(ids)

    stored = 0
    pending: Future[int] | None = None
    ordered = sorted(set(uids))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-store") as pool:
        for start in range(0, len(ordered), SIZE_WINDOW):
            window = ordered[start : start + SIZE_WINDOW]
            for batch in plan_batches(window, _sizes(client, window), limits):
                if due is not None and due():
                    if pending is not None:
                        pending.result()  # what was fetched is stored before we go
                    raise SessionDue()
                bodies = _download(client, batch, limits)
                items = [
                    _incoming(t, uidvalidity, uid, bodies[uid])
                    for uid in batch.fetch
                    if uid in bodies
                ]
                unfetched = [
                    _unfetched(t, uidvalidity, uid, code, size)
                    for uid, (code, size) in sorted(batch.skipped.items())
                ]
                if pending is not None:
                    stored += pending.result()  # in order; re-raises a failed commit
                pending = pool.submit(store, items, unfetched, batch)
        if pending is not None:
            stored += pending.result()
    return stored


def _incoming(t: Target, uidvalidity: int, uid: int, raw: bytes) -> IncomingMessage:
    return IncomingMessage(
        account_id=t.account_id,
        source=t.source,
        raw=raw,
        inbox_id=t.inbox_id,
        connection_id=t.connection_id,
        folder=t.folder,
        folder_role=t.role,
        uidvalidity=uidvalidity,
        uid=uid,
    )


def _unfetched(t: Target, uidvalidity: int, uid: int, code: str, size: int) -> Unfetched:
    # Connection and UID only: no subject or address of a personal mailbox reaches the log.
    log.warning(
        "connection=%s folder_role=%s uid=%s recorded without download: %s (%d bytes)",
        t.connection_id,
        t.role,
        uid,
        code,
        size,
    )
    return Unfetched(
        account_id=t.account_id,
        source=t.source,
        inbox_id=t.inbox_id,
        connection_id=t.connection_id,
        folder=t.folder,
        folder_role=t.role,
        uidvalidity=uidvalidity,
        uid=uid,
        size=size,
        code=code,
    )


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
    limits: FetchLimits | None = None,
    due: Callable[[], bool] | None = None,
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
            limits=limits,
            due=due,
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

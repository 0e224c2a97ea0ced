"""One connection's sync loop, in its own thread: connect, sync every folder, then wait for new
mail with IDLE (renewed well before servers drop it) or by polling, with backoff on errors."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from imapclient import IMAPClient
from imapclient.imapclient import SENT
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import single_read
from shared.db.models import Connection
from worker.imap.client import ImapSettings, open_session
from worker.imap.errors import LeaseLost, describe, is_auth_failure
from worker.imap.sync import Target, status, sync_folder

log = logging.getLogger("inboxlog.imap")

IDLE_RENEW_SECONDS = 290  # RFC 2177: servers may drop IDLE after 30 min; renew far sooner
CONTROL_CHECK_SECONDS = 2.0
OTHER_FOLDERS_SECONDS = 3.0  # with IDLE on one folder, how often the others get a STATUS
MARK_EVERY_SECONDS = 30.0
MAX_BACKOFF = 300.0


@dataclass
class PollerConfig:
    poll_seconds: float = 60.0
    idle_renew_seconds: float = IDLE_RENEW_SECONDS
    ca_file: str | None = None
    read_timeout: float = 120.0
    fetch_batch: int = 200


@dataclass
class Snapshot:
    """What the loop needs from the connection row, re-read every few seconds."""

    account_id: int
    kind: str
    inbox_id: int | None
    settings: ImapSettings
    since: date | None
    created_at: datetime
    status: str
    sync_requested_at: datetime | None
    backfill_since: date | None
    control: tuple  # the raw columns control_state() watches, as of this snapshot


def read_snapshot(
    sessions: sessionmaker[Session], box: SecretBox, connection_id: int
) -> Snapshot | None:
    with sessions() as session:
        c = session.get(Connection, connection_id)
        if c is None or c.imap_host is None:
            return None
        return Snapshot(
            c.account_id,
            c.kind,
            c.inbox_id,
            ImapSettings(
                c.imap_host,
                c.imap_port or 993,
                c.imap_security or "ssl",
                c.imap_username or "",
                box.decrypt(c.imap_password_enc or ""),
                tuple(c.imap_folders) if c.imap_folders else None,
            ),
            c.imap_since,
            c.created_at,
            c.status,
            c.sync_requested_at,
            c.backfill_since,
            _control(c),
        )


def folders_to_sync(
    client: IMAPClient, configured: tuple[str, ...] | None
) -> list[tuple[str, str]]:
    """(folder, role): the configured folders, else INBOX and the \\Sent special-use folder."""
    if configured:
        sent = client.find_special_folder(SENT)
        return [(f, "sent" if f == sent else "inbox") for f in configured]
    found = [("INBOX", "inbox")]
    sent = client.find_special_folder(SENT)
    if sent:
        found.append((sent, "sent"))
    return found


class ConnectionSync(threading.Thread):
    def __init__(
        self,
        connection_id: int,
        *,
        sessions: sessionmaker[Session],
        box: SecretBox,
        owner: str,
        config: PollerConfig,
        on_stored: Callable[[list[int]], None],
    ) -> None:
        super().__init__(name=f"imap-{connection_id}", daemon=True)
        self.connection_id, self.sessions, self.box = connection_id, sessions, box
        self.owner, self.config, self.on_stored = owner, config, on_stored
        self.stopping = threading.Event()
        self.client: IMAPClient | None = None
        self.handled_request: datetime | None = None
        self.auth_failed = False
        self.marked_at = 0.0
        self._control: tuple[float, tuple | None] | None = None  # (read at, value)

    # -- bookkeeping ------------------------------------------------------------------------
    def _mark(self, **values: object) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                sa.update(Connection).where(Connection.id == self.connection_id).values(**values)
            )

    def settings_now(self, *, fresh: bool = False) -> tuple | None:
        """The watched settings (control_state), read at most every CONTROL_CHECK_SECONDS: a
        burst of short cycles (mail arriving one by one) re-reads nothing it read just now."""
        now = time.monotonic()
        if fresh or self._control is None or now - self._control[0] >= CONTROL_CHECK_SECONDS:
            self._control = (now, control_state(self.sessions, self.connection_id))
        return self._control[1]

    def stop(self) -> None:
        self.stopping.set()

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                snap = read_snapshot(self.sessions, self.box, self.connection_id)
            except ValueError:
                # The password does not decrypt: INBOXLOG_SECRET_KEY differs from the one that
                # stored it. Say so, and wait for new credentials instead of crash-looping.
                self._mark(
                    status="error",
                    last_error="stored credentials cannot be decrypted "
                    "with this INBOXLOG_SECRET_KEY; set the password again",
                )
                self.stopping.wait(MAX_BACKOFF)
                continue
            except Exception as exc:  # database unavailable: back off and try again
                log.warning(
                    "connection=%s cannot read settings: %s", self.connection_id, type(exc).__name__
                )
                self.stopping.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            if snap is None or snap.status == "auth_failed":
                return
            try:
                self._session(snap)
                backoff = 1.0
            except LeaseLost:
                log.info("connection=%s lease lost; stopping", self.connection_id)
                return
            except _Reconnect:
                continue
            except Exception as exc:
                if is_auth_failure(exc):
                    # Stop until the credentials change: no hammering the server (§6).
                    self.auth_failed = True
                    self._mark(status="auth_failed", last_error=describe(exc))
                    log.warning("connection=%s authentication failed", self.connection_id)
                    return
                log.warning("connection=%s sync error: %s", self.connection_id, describe(exc))
                self._mark(status="error", last_error=describe(exc))
                self.stopping.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            finally:
                self._close()

    def _close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # the connection may already be gone
                self.client.logout()
            self.client = None

    def _session(self, snap: Snapshot) -> None:
        self.client = client = open_session(
            snap.settings, ca_file=self.config.ca_file, read_timeout=self.config.read_timeout
        )
        folders = folders_to_sync(client, snap.settings.folders)
        targets = [
            Target(self.connection_id, snap.account_id, snap.kind, snap.inbox_id, f, role)
            for f, role in folders
        ]
        resync_since = snap.since or snap.created_at.date()
        idle = client.has_capability("IDLE")
        last_seen: dict[str, tuple[int, int | None]] = {}
        while not self.stopping.is_set():
            if snap.backfill_since is not None:
                from worker.imap.backfill import backfill_folders

                backfill_folders(
                    client,
                    self.sessions,
                    targets,
                    snap.backfill_since,
                    owner=self.owner,
                    on_stored=self.on_stored,
                )
                self._mark(backfill_since=None)
            changed = not last_seen
            for t in targets:
                seen = last_seen.get(t.folder)
                if seen is not None:
                    view = status(client, t.folder)
                    if (view.uidvalidity, view.uidnext) == seen:
                        continue  # nothing new: one STATUS round trip
                changed = True
                sync_folder(
                    client,
                    self.sessions,
                    t,
                    owner=self.owner,
                    since=snap.since,
                    resync_since=resync_since,
                    on_stored=self.on_stored,
                    batch_size=self.config.fetch_batch,
                )
                view = status(client, t.folder)
                last_seen[t.folder] = (view.uidvalidity, view.uidnext)
            # A quiet cycle writes nothing, but last_sync_at still moves every MARK_EVERY
            # seconds so the sync lag that ops watch stays honest.
            if changed or time.monotonic() - self.marked_at > MARK_EVERY_SECONDS:
                self._mark(status="active", last_error=None, last_sync_at=utcnow())
                self.marked_at = time.monotonic()
            snap = self._wait(client, snap, idle, [t.folder for t in targets], last_seen)

    def _wait(
        self,
        client: IMAPClient,
        snap: Snapshot,
        idle: bool,
        folders: list[str],
        last_seen: dict[str, tuple[int, int | None]],
    ) -> Snapshot:
        """Until new mail, a sync request, a changed setting or the next poll is due.

        IDLE watches one folder (the first: INBOX by default); the others (\\Sent, where team
        replies land) get a STATUS every few seconds between two IDLEs, so their new mail is
        picked up as quickly.
        """
        deadline = time.monotonic() + (
            min(self.config.idle_renew_seconds, self.config.poll_seconds)
            if idle
            else self.config.poll_seconds
        )
        control = self.settings_now()
        if control is None or control[:6] != snap.control[:6]:
            raise _Reconnect()
        if control != snap.control:  # a request arrived since the snapshot was read
            return read_snapshot(self.sessions, self.box, self.connection_id) or snap
        watched, others = folders[0], folders[1:]
        in_idle = False
        if idle:
            client.select_folder(watched, readonly=True)
            client.idle()
            in_idle = True
        requested = False
        try:
            next_control = time.monotonic() + CONTROL_CHECK_SECONDS
            next_others = time.monotonic() + OTHER_FOLDERS_SECONDS
            while not self.stopping.is_set() and time.monotonic() < deadline:
                if idle:
                    responses = client.idle_check(timeout=0.5)
                    if any(r[1] in (b"EXISTS", b"RECENT") for r in responses if len(r) > 1):
                        break
                    if others and time.monotonic() >= next_others:
                        next_others = time.monotonic() + OTHER_FOLDERS_SECONDS
                        client.idle_done()
                        in_idle = False
                        news = _changed(client, others, last_seen)
                        client.idle()
                        in_idle = True
                        if news:
                            break
                else:
                    self.stopping.wait(0.5)
                if time.monotonic() >= next_control:
                    next_control = time.monotonic() + CONTROL_CHECK_SECONDS
                    now = self.settings_now(fresh=True)
                    if now is None or now[:6] != control[:6]:
                        raise _Reconnect()  # settings changed or the connection is gone
                    if now != control:
                        requested = True  # a sync or backfill was requested
                        break
        finally:
            if in_idle:
                client.idle_done()
        if not requested:
            return snap  # new mail or the next poll: the settings are the ones just checked
        return read_snapshot(self.sessions, self.box, self.connection_id) or snap


_CONTROL = (
    Connection.imap_host,
    Connection.imap_port,
    Connection.imap_security,
    Connection.imap_username,
    Connection.imap_password_enc,
    Connection.imap_folders,
    Connection.sync_requested_at,
    Connection.backfill_since,
)


def _control(c: Connection) -> tuple:
    return tuple(getattr(c, col.key) for col in _CONTROL)


def _changed(
    client: IMAPClient, folders: list[str], last_seen: dict[str, tuple[int, int | None]]
) -> bool:
    for folder in folders:
        view = status(client, folder)
        if (view.uidvalidity, view.uidnext) != last_seen.get(folder):
            return True
    return False


def control_state(sessions: sessionmaker[Session], connection_id: int) -> tuple | None:
    """The columns the loop watches, compared raw (no decryption every few seconds):
    the six IMAP settings, then the sync/backfill requests."""
    with single_read(sessions) as conn:  # every few seconds per connection: keep it cheap
        row = conn.execute(sa.select(*_CONTROL).where(Connection.id == connection_id)).one_or_none()
    return None if row is None or row[0] is None else tuple(row)


class _Reconnect(Exception):
    """Settings changed or the connection was removed: start a fresh session."""

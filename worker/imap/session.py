"""One connection's sync loop, in its own thread: connect, sync every folder, then wait for new
mail with IDLE (renewed well before servers drop it) or by polling, with backoff on errors
(worker/imap/backoff.py) and ``last_error`` in our own words (worker/imap/errors.py).

While it waits, the thread sleeps in ``poll()`` on its socket and its waker (worker/imap/
waker.py): it runs when the server speaks, when its next check is due, or when the poller
wakes it (stop; the row's control version moved). It reads nothing from the database on its
own while idle (§8).

Mail the server announces outside IDLE is not lost: a message that lands while the
connection is between two commands (the STATUS of the other folders, the SELECT before IDLE)
is reported as an untagged EXISTS in the answer to that command — or, by some servers, only
at the next DONE — never by the IDLE started after it. Every DONE's answer and every
command's stashed EXISTS count as news, and with IDLE a DONE/STATUS/IDLE round runs every
``recheck_seconds``, so such mail waits that long at most, not the next cycle."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from imapclient import IMAPClient
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.models import Connection
from shared.netsafety import Resolver
from shared.networks import Networks
from shared.oauth.tokens import TokenKeeper
from worker.imap.backoff import MAX_SECONDS, Backoff
from worker.imap.client import open_session
from worker.imap.errors import AuthFailed, LeaseLost, SessionDue, diagnose
from worker.imap.signin import signin_settings
from worker.imap.snapshot import (
    SETTINGS,
    Control,
    Snapshot,
    control_state,
    folders_to_sync,
    read_snapshot,
)
from worker.imap.sync import (
    FETCH_BATCH,
    FETCH_BYTES,
    MAX_MESSAGE_BYTES,
    FetchLimits,
    FolderView,
    Target,
    status,
    sync_folder,
)
from worker.imap.waker import Waker, wait_readable

log = logging.getLogger("inboxlog.imap")

IDLE_RENEW_SECONDS = 290  # RFC 2177: servers may drop IDLE after 30 min; renew far sooner
# Statuses that wait for a person: new credentials (auth_failed) or a reconnect (§10).
STOPPED = ("auth_failed", "reauth_required")
# With IDLE on one folder: how often the others get a STATUS and a DONE looks for mail the
# server did not announce during IDLE.
RECHECK_SECONDS = 3.0
_NEWS = (b"EXISTS", b"RECENT")


@dataclass
class PollerConfig:
    poll_seconds: float = 60.0
    idle_renew_seconds: float = IDLE_RENEW_SECONDS
    recheck_seconds: float = RECHECK_SECONDS
    ca_file: str | None = None
    read_timeout: float = 120.0
    fetch_batch: int = FETCH_BATCH
    fetch_bytes: int = FETCH_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # Private networks where servers may live (INBOXLOG_ALLOWED_PRIVATE_NETWORKS); empty:
    # only public addresses are dialled.
    allowed_networks: Networks = field(default_factory=Networks)
    resolver: Resolver = socket.getaddrinfo  # tests resolve names without DNS
    tokens: TokenKeeper | None = None  # OAuth access tokens (§10); None: no provider configured

    @property
    def limits(self) -> FetchLimits:
        return FetchLimits(self.fetch_batch, self.fetch_bytes, self.max_message_bytes)


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
        start_delay: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] | None = None,
    ) -> None:
        """``start_delay``: wait this long before the first login (the poller staggers the
        logins it starts together). ``rng``, ``clock`` and ``pause`` (called instead of
        waiting between attempts) let tests check the retry schedule without sleeping."""
        super().__init__(name=f"imap-{connection_id}", daemon=True)
        self.connection_id, self.sessions, self.box = connection_id, sessions, box
        self.owner, self.config, self.on_stored = owner, config, on_stored
        self.start_delay, self.clock, self._pause_hook = start_delay, clock, pause
        self.backoff = Backoff(rng or random.Random())
        self.stopping = threading.Event()
        self.waker = Waker()
        self.client: IMAPClient | None = None
        self.handled_request: datetime | None = None
        self.auth_failed = False
        self.logged_in_at: float | None = None
        self.relogin_at: float | None = None  # monotonic; see _session
        self.token_refused = False  # the last OAuth login was refused (see _session)
        self._woken_by: tuple[int, int | None] | None = None  # see _wait
        # connections.control_version as last read; the poller hints when the row's moves.
        self.control_version = 0
        self._hinted = threading.Event()
        # Waiting for news after a good cycle: the poller moves last_sync_at for us.
        self.in_sync = False

    # -- bookkeeping ------------------------------------------------------------------------
    def _mark(self, **values: object) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                sa.update(Connection).where(Connection.id == self.connection_id).values(**values)
            )

    def _read_snapshot(self) -> Snapshot | None:
        snap = read_snapshot(self.sessions, self.box, self.connection_id)
        if snap is not None:
            self.control_version = snap.control_version
        return snap

    def control_now(self) -> Control | None:
        """The watched columns as they are now (one query; after a hint)."""
        self._hinted.clear()
        control = control_state(self.sessions, self.connection_id)
        if control is not None:
            self.control_version = control.version
        return control

    def hint(self) -> None:
        """The poller saw this connection's control version move: re-read the row."""
        self._hinted.set()
        self.waker.wake()

    def stop(self) -> None:
        self.stopping.set()
        self.waker.wake()

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        finally:
            self.in_sync = False
            self.waker.close()

    def _run(self) -> None:
        if self.start_delay > 0:
            self._pause(self.start_delay, None)
        while not self.stopping.is_set():
            try:
                snap = self._read_snapshot()
            except ValueError:
                # The password does not decrypt: INBOXLOG_SECRET_KEY differs from the one that
                # stored it. Say so, and wait for new credentials instead of crash-looping.
                self._mark(
                    status="error",
                    last_error="credentials_unreadable: the stored credentials cannot be "
                    "decrypted with this INBOXLOG_SECRET_KEY; set the password again",
                )
                self._pause(MAX_SECONDS, None)
                continue
            except Exception as exc:  # database unavailable: back off and try again
                log.warning(
                    "connection=%s cannot read settings: %s", self.connection_id, type(exc).__name__
                )
                self._pause(self.backoff.after_failure(session_seconds=None), None)
                continue
            if snap is None or snap.status in STOPPED:
                return
            self.logged_in_at = None
            try:
                self._session(snap)
            except LeaseLost:
                log.info("connection=%s lease lost; stopping", self.connection_id)
                return
            except (_Reconnect, SessionDue):
                continue
            except Exception as exc:
                if self._failed(snap, exc):
                    return
            finally:
                self._close()

    def _failed(self, snap: Snapshot, exc: Exception) -> bool:
        """Record a failed session and wait before the next; True: stop (auth_failed)."""
        found = diagnose(exc, oauth=snap.oauth_provider is not None)
        if not found.retry:
            # Stop until the credentials change or a reconnect: no hammering the server (§6).
            self.auth_failed = True
            self._mark(status=found.status, last_error=found.last_error)
            log.warning("connection=%s stopped: %s", self.connection_id, found.category)
            return True
        lived = None if self.logged_in_at is None else self.clock() - self.logged_in_at
        wait = self.backoff.after_failure(session_seconds=lived, hint_seconds=found.hint_seconds)
        # Our category and the exception's type only: never the server's words, nor a body.
        log.warning(
            "connection=%s sync error: %s (%s); retrying in %.0f s",
            self.connection_id,
            found.category,
            type(exc).__name__,
            wait,
        )
        try:
            if found.status is not None:
                self._mark(status=found.status, last_error=found.last_error)
        except Exception as mark_exc:  # database down too: the wait below still applies
            log.warning(
                "connection=%s cannot record the error: %s",
                self.connection_id,
                type(mark_exc).__name__,
            )
        self._pause(wait, snap.control[:SETTINGS])
        return False

    def _pause(self, seconds: float, settings: tuple[Any, ...] | None) -> None:
        """Wait ``seconds`` or until stopped — or, given the ``settings`` the failed session
        used, until they change (new credentials or host are tried at once). Without
        ``settings`` (no session yet, or the database was down), any hint ends the wait."""
        if self._pause_hook is not None:
            self._pause_hook(seconds)
            return
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait_readable(None, self.waker, left)
            self.waker.clear()
            if not self._hinted.is_set():
                continue
            if settings is None:
                return
            with contextlib.suppress(Exception):  # database down: keep waiting
                now = self.control_now()
                if now is None or now.state[:SETTINGS] != settings:
                    return

    def _due(self) -> bool:
        """Whether this session must sign in again now (its OAuth token is due)."""
        return self.relogin_at is not None and time.monotonic() >= self.relogin_at

    def _close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # the connection may already be gone
                self.client.logout()
            self.client = None

    def _session(self, snap: Snapshot) -> None:
        settings, token = signin_settings(self.connection_id, snap, self.config.tokens)
        # An OAuth session signs in again before its token is due (§10): a new session
        # with a fresh token, without waiting for the server to drop this one.
        self.relogin_at = (
            None
            if token is None
            else time.monotonic() + max(0.0, (token.refresh_at - utcnow()).total_seconds())
        )
        try:
            self.client = client = open_session(
                settings,
                allowed=self.config.allowed_networks,
                ca_file=self.config.ca_file,
                read_timeout=self.config.read_timeout,
                resolver=self.config.resolver,
            )
        except AuthFailed:
            if token is None or self.token_refused or self.config.tokens is None:
                raise
            # A token we hold valid was refused (a clock ahead of ours, an early revocation):
            # one refresh and one more login before concluding that a reconnect is needed.
            self.token_refused = True
            self.config.tokens.invalidate(self.connection_id, token)
            raise SessionDue() from None
        self.token_refused = False
        self.logged_in_at = self.clock()
        # A good login proves the address the owner's (C7) — before any of its mail is read,
        # so the worker counts that mail as the owner's. The first proof is kept.
        self._mark(verified_at=sa.func.coalesce(Connection.verified_at, utcnow()))
        folders = folders_to_sync(client, snap.settings.folders)
        targets = [
            Target(self.connection_id, snap.account_id, snap.kind, snap.inbox_id, f, role)
            for f, role in folders
        ]
        resync_since = snap.since or snap.created_at.date()
        idle = client.has_capability("IDLE")
        last_seen: dict[str, tuple[int, int | None]] = {}
        while not self.stopping.is_set():
            if self._due():
                raise SessionDue()  # the token is due: sign in again with a fresh one
            if snap.backfill_since is not None:
                from worker.imap.backfill import backfill_folders

                backfill_folders(
                    client,
                    self.sessions,
                    targets,
                    snap.backfill_since,
                    owner=self.owner,
                    on_stored=self.on_stored,
                    limits=self.config.limits,
                    due=self._due,
                )
                self._mark(backfill_since=None)
                snap = self._read_snapshot() or snap
            changed = not last_seen
            for t in targets:
                # STATUS before the sync, and remembered as what was seen: mail landing during
                # the sync shows as a change at the next check instead of being taken as seen.
                view = status(client, t.folder)
                if _seen(view) == last_seen.get(t.folder):
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
                    limits=self.config.limits,
                    due=self._due,
                )
                last_seen[t.folder] = _seen(view)
            # A quiet cycle writes nothing: while the connection waits in sync, the poller
            # moves last_sync_at with everyone's lease, so the lag ops watch stays honest.
            if changed:
                self._mark(status="active", last_error=None, last_sync_at=utcnow())
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
        replies land) get a STATUS every ``recheck_seconds`` between two IDLEs, so their new
        mail is picked up as quickly.
        """
        # With IDLE too, a full cycle (a STATUS of every folder) at least every poll interval.
        deadline = time.monotonic() + (
            min(self.config.idle_renew_seconds, self.config.poll_seconds)
            if idle
            else self.config.poll_seconds
        )
        if self.relogin_at is not None:
            deadline = min(deadline, self.relogin_at)
        if self._hinted.is_set() and self._requested(snap):
            return self._read_snapshot() or snap
        watched, others = folders[0], folders[1:]
        if idle:
            selected = _selected(client.select_folder(watched, readonly=True))
            if selected not in (None, last_seen.get(watched), self._woken_by):
                # Mail arrived between the last STATUS and now, which IDLE would not report.
                # Once per value: a server whose SELECT and STATUS disagree for good must not
                # turn this into a loop.
                self._woken_by = selected
                return snap
            _announced(client)  # what the SELECT said is in `selected`
        self.in_sync = True
        try:
            if idle:
                requested = self._idle(client, snap, deadline, others, last_seen)
            else:
                requested = self._sleep(snap, deadline)
        finally:
            self.in_sync = False
        if not requested:
            return snap  # new mail or the next poll: the settings are the ones just checked
        return self._read_snapshot() or snap

    def _idle(
        self,
        client: IMAPClient,
        snap: Snapshot,
        deadline: float,
        others: list[str],
        last_seen: dict[str, tuple[int, int | None]],
    ) -> bool:
        """IDLE until news or the deadline (False), or a request (True); see the module
        docstring for the recheck rounds."""
        client.idle()
        in_idle = True
        try:
            recheck = time.monotonic() + self.config.recheck_seconds
            while not self.stopping.is_set():
                now = time.monotonic()
                if now >= deadline:
                    return False
                readable, _ = wait_readable(
                    client.socket().fileno(), self.waker, min(deadline, recheck) - now
                )
                self.waker.clear()
                if readable and _news(client.idle_check(timeout=0)):
                    return False
                if self._hinted.is_set() and self._requested(snap):
                    return True
                if time.monotonic() >= recheck:
                    recheck = time.monotonic() + self.config.recheck_seconds
                    _, answered = client.idle_done()
                    in_idle = False
                    news = _news(answered) | _announced(client)
                    news |= _changed(client, others, last_seen) | _announced(client)
                    client.idle()
                    in_idle = True
                    if news:
                        return False
            return False
        finally:
            if in_idle:
                client.idle_done()

    def _sleep(self, snap: Snapshot, deadline: float) -> bool:
        """Without IDLE: sleep until the next poll (False), or a request (True)."""
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= deadline:
                return False
            wait_readable(None, self.waker, deadline - now)
            self.waker.clear()
            if self._hinted.is_set() and self._requested(snap):
                return True
        return False

    def _requested(self, snap: Snapshot) -> bool:
        """After a hint: reconnect when the sign-in settings changed or the connection is
        gone; True when a sync or backfill was requested since ``snap``."""
        now = self.control_now()
        if now is None or now.state[:SETTINGS] != snap.control[:SETTINGS]:
            raise _Reconnect()
        return now.state != snap.control


def _seen(view: FolderView) -> tuple[int, int | None]:
    return (view.uidvalidity, view.uidnext)


def _selected(info: dict[bytes, Any]) -> tuple[int, int | None] | None:
    """(UIDVALIDITY, UIDNEXT) from a SELECT/EXAMINE response, as STATUS reports them; None
    when the server left either out."""
    if b"UIDNEXT" not in info or b"UIDVALIDITY" not in info:
        return None
    return (int(info[b"UIDVALIDITY"]), int(info[b"UIDNEXT"]))


def _changed(
    client: IMAPClient, folders: list[str], last_seen: dict[str, tuple[int, int | None]]
) -> bool:
    return any(_seen(status(client, f)) != last_seen.get(f) for f in folders)


def _news(responses: list[Any]) -> bool:
    """Whether parsed untagged responses announce mail (EXISTS/RECENT)."""
    return any(len(r) > 1 and r[1] in _NEWS for r in responses)


def _announced(client: IMAPClient) -> bool:
    """Takes the EXISTS/RECENT the server sent in answer to other commands (imaplib keeps
    them aside): whether there were any. A STATUS of another folder carries the selected
    folder's EXISTS when mail landed meanwhile; IDLE will not report it again."""
    stash = client._imap.untagged_responses
    found = [stash.pop(name, None) for name in ("EXISTS", "RECENT")]
    return any(found)


class _Reconnect(Exception):
    """Settings changed or the connection was removed: start a fresh session."""

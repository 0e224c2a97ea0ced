"""Delivering outbox entries (§9): claim one — and the other queued entries of its connection,
up to :data:`BATCH` — send each copy not yet accepted through the connection's SMTP server (over
up to :data:`SESSIONS` sessions side by side), record the outcome, and go on with the
connection's next batch for up to :data:`KEEP_ON_SECONDS`.

``queued → sending → sent | retrying → failed``. A copy is recorded ``accepted`` in its own
commit right after the server's 250, so a retry never sends it again; the one window where a
copy can go twice is a crash between that 250 and that commit (same Message-ID both times).
Temporary refusals and network errors retry with backoff (the first within 60 s) until
``INBOXLOG_OUTBOUND_RETRY_HOURS`` after the message was queued; permanent ones fail with the
server's reply. On ``sent`` the message is stored for logging (source ``sent``) in the same
transaction, unless its ``log`` was false. When the session breaks midway, the entries not yet
tried are given back (``released``) for another session; a claim keeps workers apart.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker, undefer

from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import single_write
from shared.db.models import Connection, Conversation, Outbox, OutboxCopy, StoredMessage
from shared.netsafety import Resolver
from shared.networks import Networks
from shared.oauth.errors import ReauthRequired, TokenUnavailable
from shared.oauth.tokens import TokenKeeper
from shared.outbound.smtp_client import DeliveryError, SmtpSession, SmtpSettings, smtp_session

log = logging.getLogger("inboxlog.outbound")
NO_CONNECTION = "no_connection: the connection was removed"

BATCH = 50  # queued entries of one connection taken by one delivery
# Sessions a delivery opens side by side to the connection's server (providers allow a few
# at once per mailbox: Microsoft 365 three, for one).
SESSIONS = 3
# A delivery goes on with the connection's next queued batch for this long (well inside the
# task time limit): a backlog drains at once, not when the queue reaches a free entry's task.
KEEP_ON_SECONDS = 20.0
CLAIM_SECONDS = 300.0  # a sending worker that vanished gives the entry back after this
FIRST_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 3600.0


@dataclass
class DeliveryDeps:
    sessions: sessionmaker[Session]
    box: SecretBox
    allowed: Networks
    retry_hours: float = 24.0
    first_retry_seconds: float = FIRST_RETRY_SECONDS
    ca_file: str | None = None
    tokens: TokenKeeper | None = None
    resolver: Resolver = socket.getaddrinfo
    # Called after commit with ids of stored messages to process (the logged copy).
    on_stored: Callable[[list[int]], object] = field(default=lambda ids: None)
    clock: Callable[[], datetime] = utcnow


def retry_delay(attempts: int, first: float = FIRST_RETRY_SECONDS) -> float:
    """30 s, 60 s, 2 min … (from ``first``) capped at an hour."""
    return min(MAX_RETRY_SECONDS, first * 2 ** max(0, attempts - 1))


@dataclass
class _Entry:
    row: Outbox
    copies: list[OutboxCopy]  # not yet answered, in order
    raws: dict[int, bytes]

    @property
    def id(self) -> int:
        return self.row.id


def deliver(
    outbox_id: int,
    deps: DeliveryDeps,
    *,
    batch: int = BATCH,
    sessions: int = SESSIONS,
    keep_on: float = KEEP_ON_SECONDS,
) -> dict[int, str]:
    """Deliver what is left of entry ``outbox_id`` — and of up to ``batch - 1`` other queued
    entries of the same connection, over up to ``sessions`` SMTP sessions at once; then, for
    up to ``keep_on`` seconds, the connection's next queued ones, a batch at a time (so a
    backlog drains without waiting for the queue to reach a task whose entry is still free).
    Returns the status of each entry taken: ``sent``, ``failed``, ``retrying``
    (``next_attempt_at`` set, for the caller to schedule), or ``released`` (given back
    untried when a session broke: the caller enqueues it again). Empty when ``outbox_id``
    was not due or someone else holds it."""
    started = time.monotonic()
    now = deps.clock()
    if not _claim(deps.sessions, outbox_id, now):
        return {}
    with deps.sessions() as session:
        row = session.get(Outbox, outbox_id)
        assert row is not None
        conn = session.get(Connection, row.connection_id) if row.connection_id else None
        session.expunge_all()
    if conn is None:
        return {outbox_id: _finish(deps, outbox_id, "failed", NO_CONNECTION)}
    ids = [outbox_id, *_claim_companions(deps.sessions, conn.id, outbox_id, now, batch - 1)]
    statuses: dict[int, str] = {}
    while ids:
        found = _deliver_batch(deps, conn, _load(deps.sessions, ids), sessions)
        statuses.update(found)
        full = len(ids) == batch and all(s in ("sent", "failed") for s in found.values())
        if not full or time.monotonic() - started >= keep_on:
            break
        ids = _claim_companions(deps.sessions, conn.id, None, deps.clock(), batch)
    return statuses


def _deliver_batch(
    deps: DeliveryDeps, conn: Connection, entries: list[_Entry], sessions: int
) -> dict[int, str]:
    try:
        settings = _smtp_settings(conn, deps)
    except ReauthRequired as exc:
        return {e.id: _finish(deps, e.id, "failed", exc.last_error) for e in entries}
    except TokenUnavailable as exc:
        return {e.id: _retry(deps, e.row, exc.last_error) for e in entries}
    # Up to ``sessions`` side by side, each carrying its share of the entries in turn: a
    # copy's SMTP transaction and its commit are waits, which other sessions fill.
    shares = [entries[i::sessions] for i in range(min(sessions, len(entries)))]
    statuses: dict[int, str] = {}
    if len(shares) == 1:
        statuses.update(_over_one_session(deps, settings, shares[0]))
    else:
        with ThreadPoolExecutor(len(shares), thread_name_prefix="smtp-session") as pool:
            for found in pool.map(lambda share: _over_one_session(deps, settings, share), shares):
                statuses.update(found)
    done = [e.id for e in entries if e.id not in statuses]
    statuses.update(_complete(deps, done))
    return statuses


def _over_one_session(
    deps: DeliveryDeps, settings: SmtpSettings, entries: list[_Entry]
) -> dict[int, str]:
    """Send ``entries`` in turn over one session; the status of each entry that ended other
    than answered (every copy answered: the caller completes it)."""
    statuses: dict[int, str] = {}
    try:
        with smtp_session(
            settings,
            allowed=deps.allowed,
            ca_file=deps.ca_file,
            resolver=deps.resolver,
        ) as smtp:
            for n, entry in enumerate(entries):
                status, usable = _send_entry(deps, smtp, entry)
                if status == "unsent":
                    statuses[entry.id] = _release(deps, entry.id)
                elif status is not None:
                    statuses[entry.id] = status
                if not usable:  # what is left goes over another session
                    for rest in entries[n + 1 :]:
                        statuses[rest.id] = _release(deps, rest.id)
                    break
    except DeliveryError as exc:  # the session did not open: the same for every entry
        for entry in entries:
            if entry.id not in statuses:
                statuses[entry.id] = (
                    _retry(deps, entry.row, exc.last_error)
                    if exc.temporary
                    else _finish(deps, entry.id, "failed", exc.last_error)
                )
    return statuses


def _send_entry(deps: DeliveryDeps, smtp: SmtpSession, entry: _Entry) -> tuple[str | None, bool]:
    """Send the entry's copies, each recorded right after its answer. Returns (status, is the
    session still usable): ``retrying`` after a temporary refusal, ``unsent`` when the session
    broke with copies left, None when every copy was answered."""
    for i, copy in enumerate(entry.copies):
        try:
            accepted = smtp.send(entry.row.mail_from, list(copy.recipients), entry.raws[copy.id])
        except DeliveryError as exc:
            usable = smtp.usable(exc)
            if exc.temporary:
                return _retry(deps, entry.row, exc.last_error), usable
            _copy_done(deps, copy.id, "refused", exc.last_error)
            if not usable:
                return ("unsent" if i + 1 < len(entry.copies) else None), False
            continue
        status = "accepted" if accepted.recipients else "refused"
        _copy_done(deps, copy.id, status, str(accepted.reply))
    return None, True


def _claim(sessions: sessionmaker[Session], outbox_id: int, now: datetime) -> bool:
    with single_write(sessions) as conn:
        taken = conn.execute(
            sa.update(Outbox)
            .where(
                Outbox.id == outbox_id,
                sa.or_(
                    sa.and_(
                        Outbox.status.in_(("queued", "retrying")),
                        sa.or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now),
                    ),
                    # A worker that died while sending: taken back once its claim lapsed.
                    sa.and_(Outbox.status == "sending", Outbox.claimed_until < now),
                ),
            )
            .values(
                status="sending",
                attempts=Outbox.attempts + 1,
                claimed_until=now + timedelta(seconds=CLAIM_SECONDS),
            )
        )
        return taken.rowcount == 1


def _claim_companions(
    sessions: sessionmaker[Session],
    connection_id: int,
    outbox_id: int | None,
    now: datetime,
    limit: int,
) -> list[int]:
    """Other queued entries of the connection, claimed for the same session (their own
    tasks then find them taken). Never retrying ones: those keep their backoff."""
    if limit <= 0:
        return []
    due = (
        sa.select(Outbox.id)
        .where(
            Outbox.connection_id == connection_id,
            Outbox.status == "queued",
            Outbox.id != (outbox_id or 0),
        )
        .order_by(Outbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL: rows another claim holds are skipped
        # A CTE, evaluated once: a LIMIT subquery inside IN may be run again by the planner
        # and take more rows than the limit.
        .cte("due")
    )
    with single_write(sessions) as conn:  # one statement
        taken = conn.execute(
            sa.update(Outbox)
            .where(Outbox.id.in_(sa.select(due.c.id)), Outbox.status == "queued")
            .values(
                status="sending",
                attempts=Outbox.attempts + 1,
                claimed_until=now + timedelta(seconds=CLAIM_SECONDS),
            )
            .returning(Outbox.id)
        )
        return sorted(taken.scalars())


def _load(sessions: sessionmaker[Session], ids: list[int]) -> list[_Entry]:
    with sessions() as session:
        rows = {r.id: r for r in session.scalars(sa.select(Outbox).where(Outbox.id.in_(ids)))}
        copies: dict[int, list[OutboxCopy]] = {i: [] for i in ids}
        raws: dict[int, bytes] = {}
        for copy in session.scalars(
            sa.select(OutboxCopy)
            .where(OutboxCopy.outbox_id.in_(ids), OutboxCopy.status == "pending")
            .order_by(OutboxCopy.id)
            .options(undefer(OutboxCopy.raw))  # in this one read, not one read per copy
        ):
            copies[copy.outbox_id].append(copy)
            raws[copy.id] = copy.raw
        session.expunge_all()
    return [_Entry(rows[i], copies[i], raws) for i in ids]


def _smtp_settings(conn: Connection, deps: DeliveryDeps) -> SmtpSettings:
    assert conn.smtp_host is not None
    if conn.oauth_provider is not None:
        if deps.tokens is None or conn.oauth_provider not in deps.tokens.providers:
            raise TokenUnavailable(f"the OAuth provider {conn.oauth_provider!r} is not configured")
        token = deps.tokens.access_token(conn.id)
        provider = deps.tokens.providers[conn.oauth_provider]
        return SmtpSettings(
            conn.smtp_host, conn.smtp_port or 587, conn.smtp_security or "starttls",
            conn.smtp_username or conn.address, token.value, auth="oauth", sasl=provider.sasl,
        )  # fmt: skip
    secret_enc = conn.smtp_password_enc or conn.imap_password_enc
    return SmtpSettings(
        conn.smtp_host,
        conn.smtp_port or 587,
        conn.smtp_security or "starttls",
        conn.smtp_username or conn.imap_username,
        deps.box.decrypt(secret_enc) if secret_enc else None,
    )


def _copy_done(deps: DeliveryDeps, copy_id: int, status: str, reply: str) -> None:
    """Committed before the next copy goes: one statement, committed on its own."""
    with single_write(deps.sessions) as conn:
        conn.execute(
            sa.update(OutboxCopy)
            .where(OutboxCopy.id == copy_id)
            .values(
                status=status,
                reply=reply[:500],
                accepted_at=deps.clock() if status == "accepted" else None,
            )
        )


def _retry(deps: DeliveryDeps, row: Outbox, last_error: str) -> str:
    now = deps.clock()
    if now - row.created_at >= timedelta(hours=deps.retry_hours):
        return _finish(deps, row.id, "failed", last_error)
    attempts = row.attempts  # the claim counted this attempt
    with single_write(deps.sessions) as conn:
        conn.execute(
            sa.update(Outbox)
            .where(Outbox.id == row.id)
            .values(
                status="retrying",
                last_error=last_error,
                claimed_until=None,
                next_attempt_at=now
                + timedelta(seconds=retry_delay(attempts, deps.first_retry_seconds)),
            )
        )
    log.info("outbox=%s temporarily refused; retrying", row.id)
    return "retrying"


def _release(deps: DeliveryDeps, outbox_id: int) -> str:
    """Give an entry back untried (this attempt does not count): the session broke before
    its turn."""
    with single_write(deps.sessions) as conn:
        conn.execute(
            sa.update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(status="queued", attempts=Outbox.attempts - 1, claimed_until=None)
        )
    return "released"


def _finish(deps: DeliveryDeps, outbox_id: int, status: str, last_error: str | None) -> str:
    with single_write(deps.sessions) as conn:
        conn.execute(
            sa.update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(status=status, last_error=last_error, claimed_until=None)
        )
    log.info("outbox=%s %s", outbox_id, status)
    return status


def _complete(deps: DeliveryDeps, outbox_ids: list[int]) -> dict[int, str]:
    """Entries whose every copy was answered, in one transaction: ``sent`` when any copy was
    accepted (and the message stored for logging), else ``failed`` with the refusal."""
    if not outbox_ids:
        return {}
    statuses: dict[int, str] = {}
    stored: list[tuple[StoredMessage, Outbox]] = []
    with deps.sessions() as session, session.begin():
        copies: dict[int, list[OutboxCopy]] = {i: [] for i in outbox_ids}
        for copy in session.scalars(
            sa.select(OutboxCopy)
            .where(OutboxCopy.outbox_id.in_(outbox_ids))
            .order_by(OutboxCopy.id)
        ):
            copies[copy.outbox_id].append(copy)
        entries = session.scalars(
            sa.select(Outbox)
            .where(Outbox.id.in_(outbox_ids))
            .order_by(Outbox.id)
            .options(undefer(Outbox.raw))  # stored for logging: read with its row
        ).all()
        inboxes = _inboxes(session, [e.conversation_id for e in entries if e.conversation_id])
        for entry in entries:
            statuses[entry.id] = _conclude(deps, session, entry, copies[entry.id], inboxes, stored)
        session.flush()  # the stored messages' ids
        for message, entry in stored:
            entry.stored_message_id = message.id
    if stored:
        deps.on_stored([m.id for m, _ in stored])
    for outbox_id, status in statuses.items():
        log.info("outbox=%s %s", outbox_id, status)
    return statuses


def _inboxes(session: Session, conversation_ids: list[int]) -> dict[int, int]:
    if not conversation_ids:
        return {}
    rows = session.execute(
        sa.select(Conversation.id, Conversation.inbox_id).where(
            Conversation.id.in_(conversation_ids)
        )
    )
    return {conversation_id: inbox_id for conversation_id, inbox_id in rows}


def _conclude(
    deps: DeliveryDeps,
    session: Session,
    entry: Outbox,
    copies: list[OutboxCopy],
    inboxes: dict[int, int],
    stored: list[tuple[StoredMessage, Outbox]],
) -> str:
    accepted = [c for c in copies if c.status == "accepted"]
    entry.claimed_until = None
    if not accepted:
        entry.status = "failed"
        entry.last_error = next((c.reply for c in copies if c.reply), "refused")
        return "failed"
    entry.status, entry.sent_at, entry.last_error = "sent", deps.clock(), None
    refused = [c.reply for c in copies if c.status == "refused"]
    if refused:
        entry.last_error = f"some recipients were refused: {refused[0]}"
    if entry.log and entry.stored_message_id is None:
        message = StoredMessage(
            account_id=entry.account_id,
            source="sent",
            # a team reply joins its conversation
            inbox_id=inboxes.get(entry.conversation_id) if entry.conversation_id else None,
            connection_id=entry.connection_id,
            envelope_from=entry.mail_from,
            envelope_to=[a for c in accepted for a in c.recipients],
            raw=entry.raw,
            raw_size=len(entry.raw),
            acting_user_id=entry.sender_id,
        )
        session.add(message)
        stored.append((message, entry))
    return "sent"

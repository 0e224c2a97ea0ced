"""Delivering one outbox entry (§9): claim it, send each copy not yet accepted through the
connection's SMTP server, and record the outcome.

``queued → sending → sent | retrying → failed``. A copy is recorded ``accepted`` in its own
commit right after the server's 250, so a retry never sends it again; the one window where a
copy can go twice is a crash between that 250 and that commit (same Message-ID both times).
Temporary refusals and network errors retry with backoff (the first within 60 s) until
``INBOXLOG_OUTBOUND_RETRY_HOURS`` after the message was queued; permanent ones fail with the
server's reply. On ``sent`` the message is stored for logging (source ``sent``) in the same
transaction, unless its ``log`` was false.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import rowcount
from shared.db.models import Connection, Conversation, Outbox, OutboxCopy, StoredMessage
from shared.netsafety import Resolver
from shared.networks import Networks
from shared.oauth.errors import ReauthRequired, TokenUnavailable
from shared.oauth.tokens import TokenKeeper
from shared.outbound.smtp_client import DeliveryError, SmtpSettings, send_message

log = logging.getLogger("inboxlog.outbound")

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


def deliver(outbox_id: int, deps: DeliveryDeps) -> str | None:
    """Deliver what is left of the entry; returns its status, or None when it was not due or
    someone else holds it. Returns ``retrying`` with ``next_attempt_at`` set for the caller to
    schedule."""
    now = deps.clock()
    if not _claim(deps.sessions, outbox_id, now):
        return None
    with deps.sessions() as session:
        row = session.get(Outbox, outbox_id)
        assert row is not None
        conn = session.get(Connection, row.connection_id) if row.connection_id else None
        copies = list(
            session.scalars(
                sa.select(OutboxCopy)
                .where(OutboxCopy.outbox_id == outbox_id, OutboxCopy.status == "pending")
                .order_by(OutboxCopy.id)
            )
        )
        raws = {c.id: c.raw for c in copies}
        session.expunge_all()
    if conn is None:
        return _finish(deps, outbox_id, "failed", "no_connection: the connection was removed")
    try:
        settings = _smtp_settings(conn, deps)
    except ReauthRequired as exc:
        return _finish(deps, outbox_id, "failed", exc.last_error)
    except TokenUnavailable as exc:
        return _retry(deps, outbox_id, row, exc.last_error)
    for copy in copies:
        try:
            accepted = send_message(
                settings,
                mail_from=row.mail_from,
                recipients=list(copy.recipients),
                data=raws[copy.id],
                allowed=deps.allowed,
                ca_file=deps.ca_file,
                resolver=deps.resolver,
            )
        except DeliveryError as exc:
            if exc.temporary:
                return _retry(deps, outbox_id, row, exc.last_error)
            _copy_done(deps, copy.id, "refused", exc.last_error)
            continue
        status = "accepted" if accepted.recipients else "refused"
        _copy_done(deps, copy.id, status, str(accepted.reply))
    return _complete(deps, outbox_id, row)


def _claim(sessions: sessionmaker[Session], outbox_id: int, now: datetime) -> bool:
    with sessions() as session, session.begin():
        taken = session.execute(
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
        return rowcount(taken) == 1


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
    with deps.sessions() as session, session.begin():
        session.execute(
            sa.update(OutboxCopy)
            .where(OutboxCopy.id == copy_id)
            .values(
                status=status,
                reply=reply[:500],
                accepted_at=deps.clock() if status == "accepted" else None,
            )
        )


def _retry(deps: DeliveryDeps, outbox_id: int, row: Outbox, last_error: str) -> str:
    now = deps.clock()
    if now - row.created_at >= timedelta(hours=deps.retry_hours):
        return _finish(deps, outbox_id, "failed", last_error)
    attempts = row.attempts  # the claim counted this attempt
    with deps.sessions() as session, session.begin():
        session.execute(
            sa.update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(
                status="retrying",
                last_error=last_error,
                claimed_until=None,
                next_attempt_at=now
                + timedelta(seconds=retry_delay(attempts, deps.first_retry_seconds)),
            )
        )
    log.info("outbox=%s temporarily refused; retrying", outbox_id)
    return "retrying"


def _finish(deps: DeliveryDeps, outbox_id: int, status: str, last_error: str | None) -> str:
    with deps.sessions() as session, session.begin():
        session.execute(
            sa.update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(status=status, last_error=last_error, claimed_until=None)
        )
    log.info("outbox=%s %s", outbox_id, status)
    return status


def _complete(deps: DeliveryDeps, outbox_id: int, row: Outbox) -> str:
    """Every copy answered: ``sent`` when any was accepted (and the message is stored for
    logging), else ``failed`` with the refusal."""
    stored: list[int] = []
    with deps.sessions() as session, session.begin():
        copies = list(
            session.scalars(sa.select(OutboxCopy).where(OutboxCopy.outbox_id == outbox_id))
        )
        accepted = [c for c in copies if c.status == "accepted"]
        entry = session.get(Outbox, outbox_id)
        assert entry is not None
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
            inbox_id = (
                session.scalar(
                    sa.select(Conversation.inbox_id).where(Conversation.id == entry.conversation_id)
                )
                if entry.conversation_id
                else None
            )
            message = StoredMessage(
                account_id=entry.account_id,
                source="sent",
                inbox_id=inbox_id,  # a team reply joins its conversation
                connection_id=entry.connection_id,
                envelope_from=entry.mail_from,
                envelope_to=[a for c in accepted for a in c.recipients],
                raw=entry.raw,
                raw_size=len(entry.raw),
                acting_user_id=entry.sender_id,
            )
            session.add(message)
            session.flush()
            entry.stored_message_id = message.id
            stored.append(message.id)
    if stored:
        deps.on_stored(stored)
    log.info("outbox=%s sent", outbox_id)
    return "sent"

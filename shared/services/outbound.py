"""Sending mail through inboxlog (§9): who may send from what, building and storing the message
with its copies and tracking links before the API answers, and the outbox as the API shows it.

Delivery is the worker's (worker/outbound/deliver.py); this module only decides and stores.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from collections.abc import Callable, Sequence
from email.utils import getaddresses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.account_settings import matches_address_or_domain
from shared.db.base import utcnow
from shared.db.models import (
    Account,
    Connection,
    Contact,
    ConversationEmail,
    Decision,
    InboxMember,
    LoggedEmail,
    Outbox,
    OutboxCopy,
    TeamInbox,
    TrackingLink,
    User,
)
from shared.errors import Forbidden, Invalid, NotFound
from shared.mail.addresses import normalize_address
from shared.outbound.compose import (
    Attachment,
    ComposeError,
    Draft,
    Recipient,
    new_message_id,
    parse_recipients,
    render,
)
from shared.principal import Principal
from shared.services.account_facts import internal_among
from shared.services.conversations import get_conversation
from shared.timefmt import iso

MAX_RECIPIENTS = 100
MAX_REFERENCES = 20  # a reply's References: the thread's last ones and the message replied to


def sender_connection(*, session: Session, principal: Principal, address: str) -> Connection:
    """The connection ``principal`` may send from as ``address`` (§9): one of their own proven,
    active personal connections, or the team connection of an inbox they belong to."""
    principal.require_user()
    address = normalize_address(address)
    conn = session.scalar(
        sa.select(Connection).where(
            Connection.account_id == principal.account_id, Connection.address == address
        )
    )
    allowed = conn is not None and (
        (conn.kind == "personal" and conn.user_id == principal.user_id and conn.verified_at)
        or (
            conn.kind == "team"
            and session.scalar(
                sa.select(InboxMember.user_id).where(
                    InboxMember.inbox_id == conn.inbox_id, InboxMember.user_id == principal.user_id
                )
            )
            is not None
        )
    )
    if conn is None or not allowed:
        raise Forbidden(f"you may not send from {address}", code="sender_not_allowed")
    if conn.smtp_host is None:
        raise Invalid(
            f"the connection {address} has no SMTP settings", code="no_smtp",
            details={"connection_id": conn.id},
        )  # fmt: skip
    return conn


def send_email(
    *,
    session: Session,
    principal: Principal,
    logging_domain: str,
    tracking_url: Callable[[str, str], str],
    max_bytes: int,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str,
    text: str | None,
    html: str | None,
    attachments: Sequence[Attachment] = (),
    log: bool | None = None,
    track: bool | None = None,
) -> Outbox:
    """Build and store the message, its copies and their tracking links (queued)."""
    conn = sender_connection(session=session, principal=principal, address=sender)
    user = session.get(User, principal.user_id)
    assert user is not None
    recipients = _recipients(to, cc, bcc)
    draft = Draft(
        conn.address,
        user.name if conn.kind == "personal" else None,
        tuple(recipients),
        subject,
        text,
        html,
        tuple(attachments),
    )
    return _store(
        session, conn, user, draft, logging_domain, tracking_url, max_bytes, log, track, None
    )


def reply(
    *,
    session: Session,
    principal: Principal,
    logging_domain: str,
    tracking_url: Callable[[str, str], str],
    max_bytes: int,
    conversation_id: int,
    text: str | None,
    html: str | None,
    cc: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
    track: bool | None = None,
) -> Outbox:
    """A reply from the inbox's team connection to the conversation's external participant,
    with the inbox's sender name, threading headers of the last message and one ``Re:``."""
    conv = get_conversation(session=session, principal=principal, conversation_id=conversation_id)
    conn = session.scalar(
        sa.select(Connection).where(Connection.kind == "team", Connection.inbox_id == conv.inbox_id)
    )
    if conn is None:
        raise Invalid("this inbox has no connection to send from", code="no_team_connection")
    conn = sender_connection(session=session, principal=principal, address=conn.address)
    if not conv.external_address:
        raise Invalid("the conversation has no external participant", code="no_recipient")
    last = session.scalar(
        sa.select(LoggedEmail)
        .join(ConversationEmail, ConversationEmail.email_id == LoggedEmail.id)
        .where(ConversationEmail.conversation_id == conv.id)
        .order_by(
            sa.func.coalesce(LoggedEmail.date, LoggedEmail.received_at).desc(),
            LoggedEmail.id.desc(),
        )
        .limit(1)
    )
    inbox = session.get(TeamInbox, conv.inbox_id)
    user = session.get(User, principal.user_id)
    assert user is not None and inbox is not None
    refs: list[str] = []
    if last is not None and last.message_id:
        refs = [*(last.references or [])[-MAX_REFERENCES + 1 :], last.message_id]
    draft = Draft(
        conn.address,
        inbox.sender_name,
        tuple(_recipients([conv.external_address], cc, ())),
        reply_subject(last.subject if last is not None else conv.subject),
        text,
        html,
        tuple(attachments),
        in_reply_to=last.message_id if last is not None else None,
        references=tuple(refs),
    )
    return _store(
        session, conn, user, draft, logging_domain, tracking_url, max_bytes, None, track, conv.id
    )


def reply_subject(subject: str | None) -> str:
    """One ``Re:``, however many the thread piled up (``Re: RE: re:`` → ``Re: ``)."""
    rest = (subject or "").strip()
    while rest[:3].lower() == "re:":
        rest = rest[3:].lstrip()
    return f"Re: {rest}"


def _recipients(to: Sequence[str], cc: Sequence[str], bcc: Sequence[str]) -> list[Recipient]:
    try:
        found = [
            *parse_recipients(to, "to"),
            *parse_recipients(cc, "cc"),
            *parse_recipients(bcc, "bcc"),
        ]
    except ComposeError as exc:
        raise Invalid(str(exc), code="invalid_recipient", details={"field": exc.field}) from None
    if not found:
        raise Invalid("at least one recipient is needed", details={"field": "to"})
    if len(found) > MAX_RECIPIENTS:
        raise Invalid(f"at most {MAX_RECIPIENTS} recipients", details={"field": "to"})
    return found


def _store(
    session: Session,
    conn: Connection,
    user: User,
    draft: Draft,
    logging_domain: str,
    tracking_url: Callable[[str, str], str],
    max_bytes: int,
    log: bool | None,
    track: bool | None,
    conversation_id: int | None,
) -> Outbox:
    log = user.default_log if log is None else log
    track = user.default_track if track is None else track
    account = session.get(Account, user.account_id)
    assert account is not None
    addresses = [r.address for r in draft.recipients]
    tracked = (
        _trackable(session, account, user, addresses, logging_domain)
        if track and draft.html is not None
        else set()
    )
    now = utcnow()
    message_id = new_message_id(conn.address)
    logged, plans = render(draft, message_id, now, tracked, tracking_url)
    if len(logged) > max_bytes or any(len(p.raw) > max_bytes for p in plans):
        raise Invalid("the message is larger than INBOXLOG_MAX_MESSAGE_BYTES", code="too_large")
    outbox = Outbox(
        account_id=account.id,
        connection_id=conn.id,
        sender_id=user.id,
        conversation_id=conversation_id,
        message_id=message_id,
        mail_from=conn.address,
        subject=draft.subject,
        recipients=[
            {"address": r.address, "name": r.name, "field": r.field} for r in draft.recipients
        ],
        raw=logged,
        html=draft.html is not None,
        log=log,
        track=bool(track),
        status="queued",
        created_at=now,
    )
    session.add(outbox)
    session.flush()
    copies = [
        OutboxCopy(
            outbox_id=outbox.id,
            recipients=list(plan.recipients),
            tracked=plan.tracked,
            raw=plan.raw,
        )
        for plan in plans
    ]
    session.add_all(copies)
    session.flush()  # one INSERT for every copy: their ids, for the links
    for plan, copy in zip(plans, copies, strict=True):
        if plan.pixel:
            recipient = plan.recipients[0]
            session.add(TrackingLink(token=plan.pixel, outbox_id=outbox.id, copy_id=copy.id,
                                     recipient=recipient, kind="open", url=None))  # fmt: skip
            for token, url in plan.links.items():
                session.add(TrackingLink(token=token, outbox_id=outbox.id, copy_id=copy.id,
                                         recipient=recipient, kind="click", url=url))  # fmt: skip
    session.flush()
    return outbox


def _trackable(
    session: Session, account: Account, user: User, addresses: list[str], logging_domain: str
) -> set[str]:
    """External recipients, not in never-log, not opted out (§9)."""
    internal = internal_among(session, account, addresses, logging_domain)
    never = set(account.settings.get("never_log") or []) | set(user.never_log or [])
    opted = set(
        session.scalars(
            sa.select(Contact.email).where(
                Contact.account_id == account.id,
                Contact.email.in_(addresses),
                Contact.tracking_opt_out.is_(True),
            )
        )
    )
    return {
        a
        for a in addresses
        if a not in internal and not matches_address_or_domain(a, never) and a not in opted
    }


def get_outbox(*, session: Session, principal: Principal, outbox_id: int) -> Outbox:
    """The sender sees their outbox entries; admins see every one of the account."""
    principal.require_user()
    row = session.get(Outbox, outbox_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFound("outbox entry not found")
    if row.sender_id != principal.user_id and not principal.is_admin:
        raise NotFound("outbox entry not found")
    return row


def outbox_view(*, session: Session, row: Outbox) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "message_id": row.message_id,
        "sent_at": iso(row.sent_at),
        "email_id": _email_id(session, row),
    }


def _email_id(session: Session, row: Outbox) -> int | None:
    if row.stored_message_id is None:
        return None
    return session.scalar(
        sa.select(Decision.email_id).where(Decision.stored_message_id == row.stored_message_id)
    )


def submit_raw(
    *,
    session: Session,
    principal: Principal,
    max_bytes: int,
    mail_from: str,
    rcpt_tos: Sequence[str],
    raw: bytes,
) -> Outbox:
    """Mail a client submitted (§9 submission listener): sent as the client wrote it — its
    Message-ID kept when it has one — in one untracked copy without its Bcc header; logged with
    the envelope recipients that no header names as Bcc. The header From and the envelope
    sender must both be addresses the user may send from (Forbidden otherwise)."""
    conn = sender_connection(session=session, principal=principal, address=mail_from)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    header_from = [a for _, a in getaddresses([str(v) for v in msg.get_all("From", [])])]
    if len(header_from) != 1 or normalize_address(header_from[0]) != conn.address:
        raise Forbidden("the From header must be the address you send from", code="from_mismatch")
    user = session.get(User, principal.user_id)
    assert user is not None
    if not rcpt_tos or len(rcpt_tos) > MAX_RECIPIENTS:
        raise Invalid("between 1 and 100 recipients", details={"field": "rcpt"})
    named = {
        normalize_address(a)
        for field in ("To", "Cc")
        for _, a in getaddresses([str(v) for v in msg.get_all(field, [])])
        if "@" in a
    }
    envelope = [normalize_address(a) for a in rcpt_tos]
    hidden = [a for a in envelope if a not in named]
    message_id = (msg["Message-ID"] or "").strip().strip("<>") or new_message_id(conn.address)
    if msg["Message-ID"] is None:
        msg["Message-ID"] = f"<{message_id}>"
    if msg["Date"] is None:
        msg["Date"] = email.utils.format_datetime(utcnow())
    del msg["Bcc"]
    wire = msg.as_bytes()
    if hidden:
        msg["Bcc"] = ", ".join(hidden)
    logged = msg.as_bytes()
    if len(logged) > max_bytes:
        raise Invalid("the message is larger than INBOXLOG_MAX_MESSAGE_BYTES", code="too_large")
    outbox = Outbox(
        account_id=user.account_id,
        connection_id=conn.id,
        sender_id=user.id,
        message_id=message_id[:255],
        mail_from=conn.address,
        subject=str(msg["Subject"] or "")[:998],
        recipients=[{"address": a, "name": None, "field": "to"} for a in envelope],
        raw=logged,
        html=False,
        log=user.default_log,
        track=False,
        status="queued",
        created_at=utcnow(),
    )
    session.add(outbox)
    session.flush()
    session.add(OutboxCopy(outbox_id=outbox.id, recipients=envelope, tracked=False, raw=wire))
    session.flush()
    return outbox

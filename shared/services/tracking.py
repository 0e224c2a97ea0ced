"""Opens and clicks of tracked mail (§9): recording a hit on an opaque token, telling machines
from people, and what the API shows (events, the email's tracking summary).

A hit costs one primary-key lookup of its token, one of its copy, and one insert; a click also
reads its copy's links and the last seconds of its clicks (both indexed, bounded) to spot a
scanner clicking every link at once. Events of a recipient who opted out are not recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Contact, Decision, Outbox, OutboxCopy, TrackingEvent, TrackingLink
from shared.outbound.machine_events import (
    BURST_WINDOW,
    CopyClicks,
    Hit,
    machine_reason,
    scanner_burst,
)
from shared.timefmt import iso

MAX_EARLIER_CLICKS = 200  # what a burst check reads of a copy's recent clicks


@dataclass(frozen=True)
class Recorded:
    url: str | None  # a click's destination


def record_hit(
    *,
    session: Session,
    token: str,
    kind: str,
    method: str,
    headers: Mapping[str, str],
    client_ip: str | None,
    now: datetime,
) -> Recorded | None:
    """None: no such token (or not of this kind) — the caller answers 404, never a redirect."""
    if not token or len(token) > 64:
        return None
    link = session.get(TrackingLink, token)
    if link is None or link.kind != kind:
        return None
    copy = session.get(OutboxCopy, link.copy_id)
    outbox = session.get(Outbox, link.outbox_id)
    if copy is None or outbox is None:
        return None
    if _opted_out(session, outbox.account_id, link.recipient):
        return Recorded(link.url)
    hit = Hit(
        kind="open" if kind == "open" else "click",
        method=method,
        headers=headers,
        client_ip=client_ip,
        at=now,
        accepted_at=copy.accepted_at,
        url=link.url,
    )
    clicks = _copy_clicks(session, copy.id, now) if kind == "click" else None
    reason = machine_reason(hit, clicks)
    if clicks is not None:
        burst = scanner_burst(hit, clicks)
        if burst:  # the earlier clicks of a completed burst were the scanner's too
            session.execute(
                sa.update(TrackingEvent)
                .where(
                    TrackingEvent.copy_id == copy.id,
                    TrackingEvent.type == "click",
                    TrackingEvent.at >= min(at for _, at in burst),
                )
                .values(machine=True, reason="scanner")
            )
    session.add(
        TrackingEvent(
            outbox_id=outbox.id,
            copy_id=copy.id,
            recipient=link.recipient,
            type=kind,
            url=link.url,
            at=now,
            machine=reason is not None,
            reason=reason,
        )
    )
    return Recorded(link.url)


def _opted_out(session: Session, account_id: int, address: str) -> bool:
    return bool(
        session.scalar(
            sa.select(Contact.tracking_opt_out).where(
                Contact.account_id == account_id, Contact.email == address
            )
        )
    )


def _copy_clicks(session: Session, copy_id: int, now: datetime) -> CopyClicks:
    links = tuple(
        session.scalars(
            sa.select(TrackingLink.url).where(
                TrackingLink.copy_id == copy_id, TrackingLink.kind == "click"
            )
        )
    )
    earlier = session.execute(
        sa.select(TrackingEvent.url, TrackingEvent.at)
        .where(
            TrackingEvent.copy_id == copy_id,
            TrackingEvent.type == "click",
            TrackingEvent.at >= now - BURST_WINDOW - timedelta(seconds=1),
        )
        .order_by(TrackingEvent.id.desc())
        .limit(MAX_EARLIER_CLICKS)
    )
    return CopyClicks(
        tuple(u for u in links if u is not None),
        tuple((url, at) for url, at in earlier if url is not None),
    )


def _outbox_of_email(session: Session, email_id: int) -> Outbox | None:
    return session.scalar(
        sa.select(Outbox)
        .join(Decision, Decision.stored_message_id == Outbox.stored_message_id)
        .where(Decision.email_id == email_id)
    )


def events(*, session: Session, email_id: int, limit: int = 500) -> list[dict[str, Any]]:
    outbox = _outbox_of_email(session, email_id)
    if outbox is None:
        return []
    rows = session.scalars(
        sa.select(TrackingEvent)
        .where(TrackingEvent.outbox_id == outbox.id)
        .order_by(TrackingEvent.id)
        .limit(limit)
    )
    return [
        {
            "type": e.type,
            "recipient": e.recipient,
            "url": e.url,
            "at": iso(e.at),
            "machine": e.machine,
            "reason": e.reason,
        }
        for e in rows
    ]


def summary(*, session: Session, email_id: int) -> dict[str, Any] | None:
    """The email's ``tracking`` (§9); None for mail not sent with tracking through inboxlog."""
    outbox = _outbox_of_email(session, email_id)
    if outbox is None or not outbox.track:
        return None
    rows = session.execute(
        sa.select(
            TrackingEvent.type,
            TrackingEvent.machine,
            TrackingEvent.recipient,
            sa.func.count(),
            sa.func.min(TrackingEvent.at),
        )
        .where(TrackingEvent.outbox_id == outbox.id)
        .group_by(TrackingEvent.type, TrackingEvent.machine, TrackingEvent.recipient)
    ).all()
    total = {"open": 0, "click": 0}
    human = {"open": 0, "click": 0}
    first_open: datetime | None = None
    by: dict[str, dict[str, Any]] = {}
    for type_, machine, recipient, n, first in rows:
        total[type_] += n
        if machine:
            continue
        human[type_] += n
        entry = by.setdefault(recipient, {"address": recipient, "opens": 0, "clicks": 0})
        entry["opens" if type_ == "open" else "clicks"] += n
        if type_ == "open" and (first_open is None or first < first_open):
            first_open = first
    return {
        "opens": total["open"],
        "human_opens": human["open"],
        "clicks": total["click"],
        "human_clicks": human["click"],
        "first_open_at": iso(first_open),
        "by_recipient": sorted(by.values(), key=lambda e: e["address"]),
    }

"""Opens and clicks of tracked mail (§9): resolving an opaque token, recording hits in
batches, telling machines from people, and what the API shows (events, the email's tracking
summary).

:func:`resolve` reads a batch's tokens (with their copy and outbox) in one indexed read.
:func:`record_hits` writes a batch in one transaction: one read of its opted-out recipients,
two of its clicked copies' links and last seconds of clicks (indexed, bounded: a scanner
clicking every link at once is a burst), and one insert. Events of a recipient who opted out
are not recorded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

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
MAX_TOKEN = 64
KINDS: dict[str, Literal["open", "click"]] = {"open": "open", "click": "click"}


@dataclass(frozen=True)
class Link:
    """What a token stands for. Everything but ``accepted_at`` is fixed when the mail is
    sent; ``accepted_at`` is set once, when the upstream server accepts the copy."""

    token: str
    kind: Literal["open", "click"]
    url: str | None  # a click's destination
    outbox_id: int
    copy_id: int
    account_id: int
    recipient: str
    accepted_at: datetime | None


@dataclass(frozen=True)
class PendingHit:
    link: Link
    method: str
    headers: Mapping[str, str]  # lower-case names
    client_ip: str | None
    at: datetime  # aware UTC


@dataclass(frozen=True)
class Resolved:
    links: dict[str, Link]  # by token; an unknown token is absent (the caller answers 404)
    # (account, recipient) of those links → has that contact opted out (read in passing)
    opted_out: dict[tuple[int, str], bool]


def resolve(session: Session, tokens: Collection[str]) -> Resolved:
    """The links of ``tokens`` that exist, and whether their recipients opted out: one
    indexed read."""
    wanted = sorted({t for t in tokens if t and len(t) <= MAX_TOKEN})
    if not wanted:
        return Resolved({}, {})
    rows = session.execute(
        sa.select(
            TrackingLink.token,
            TrackingLink.kind,
            TrackingLink.url,
            TrackingLink.outbox_id,
            TrackingLink.copy_id,
            Outbox.account_id,
            TrackingLink.recipient,
            OutboxCopy.accepted_at,
            Contact.tracking_opt_out,
        )
        .join(OutboxCopy, OutboxCopy.id == TrackingLink.copy_id)
        .join(Outbox, Outbox.id == TrackingLink.outbox_id)
        .outerjoin(
            Contact,
            sa.and_(
                Contact.account_id == Outbox.account_id, Contact.email == TrackingLink.recipient
            ),
        )
        .where(TrackingLink.token.in_(wanted))
    )
    found = Resolved({}, {})
    for token, kind, url, outbox_id, copy_id, account_id, recipient, accepted_at, out in rows:
        found.opted_out[(account_id, recipient)] = bool(out)
        known = KINDS.get(kind)
        if known is not None:
            found.links[token] = Link(
                token, known, url, outbox_id, copy_id, account_id, recipient, accepted_at
            )
    return found


def record_hits(
    *,
    session: Session,
    hits: Sequence[PendingHit],
    opted_out: Mapping[tuple[int, str], bool] | None = None,
) -> int:
    """Record ``hits`` in the caller's transaction, in order; answers how many were recorded
    (the rest were of recipients who opted out). ``opted_out``: what this transaction read
    already (:func:`resolve`); the other recipients are read here. A click is judged with
    every click before it, those of this batch included."""
    known = dict(opted_out or {})
    unknown = {(h.link.account_id, h.link.recipient) for h in hits} - known.keys()
    out = {pair for pair, flag in known.items() if flag} | _opted_out(session, unknown)
    wanted = [h for h in hits if (h.link.account_id, h.link.recipient) not in out]
    clicks = _recent_clicks(session, [h for h in wanted if h.link.kind == "click"])
    rows: list[dict[str, Any]] = []
    bursts: dict[int, datetime] = {}  # copy → the earliest click a completed burst covers
    for pending in wanted:
        link = pending.link
        hit = Hit(
            kind=link.kind,
            method=pending.method,
            headers=pending.headers,
            client_ip=pending.client_ip,
            at=pending.at,
            accepted_at=link.accepted_at,
            url=link.url,
        )
        if link.kind == "open":
            rows.append(_event_row(pending, machine_reason(hit)))
            continue
        copy = clicks[link.copy_id]
        seen = copy.seen()
        burst = scanner_burst(hit, seen)
        if burst:  # the earlier clicks of a completed burst were the scanner's too
            since = min(at for _, at in burst)
            bursts[link.copy_id] = min(since, bursts.get(link.copy_id, since))
            for row in copy.batch_rows:
                if row["at"] >= since:
                    row["machine"], row["reason"] = True, "scanner"
        row = _event_row(pending, machine_reason(hit, seen))
        copy.add(row)
        rows.append(row)
    for copy_id, since in bursts.items():
        session.execute(
            sa.update(TrackingEvent)
            .where(
                TrackingEvent.copy_id == copy_id,
                TrackingEvent.type == "click",
                TrackingEvent.at >= since,
            )
            .values(machine=True, reason="scanner")
        )
    if rows:
        session.execute(sa.insert(TrackingEvent), rows)
    return len(rows)


def _event_row(pending: PendingHit, reason: str | None) -> dict[str, Any]:
    link = pending.link
    return {
        "outbox_id": link.outbox_id,
        "copy_id": link.copy_id,
        "recipient": link.recipient,
        "type": link.kind,
        "url": link.url,
        "at": pending.at,
        "machine": reason is not None,
        "reason": reason,
    }


def _opted_out(session: Session, pairs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    if not pairs:
        return set()
    rows = session.execute(
        sa.select(Contact.account_id, Contact.email).where(
            Contact.tracking_opt_out.is_(True),
            sa.tuple_(Contact.account_id, Contact.email).in_(sorted(pairs)),
        )
    )
    return {(account_id, email) for account_id, email in rows}


@dataclass
class _Clicks:
    """A copy's links and its recent clicks: those stored, then this batch's."""

    links: tuple[str, ...]
    stored: list[tuple[str, datetime]]
    batch_rows: list[dict[str, Any]]

    def seen(self) -> CopyClicks:
        batch = [(r["url"], r["at"]) for r in self.batch_rows if r["url"] is not None]
        return CopyClicks(self.links, tuple(self.stored + batch))

    def add(self, row: dict[str, Any]) -> None:
        self.batch_rows.append(row)


def _recent_clicks(session: Session, clicks: list[PendingHit]) -> dict[int, _Clicks]:
    """For the copies clicked in this batch: their links, and their clicks recent enough to
    share a burst with one of the batch (at most :data:`MAX_EARLIER_CLICKS` per copy, on
    average). Two indexed reads, whatever the batch's size."""
    copies = sorted({h.link.copy_id for h in clicks})
    if not copies:
        return {}
    found = {c: _Clicks((), [], []) for c in copies}
    links: dict[int, list[str]] = {c: [] for c in copies}
    for copy_id, url in session.execute(
        sa.select(TrackingLink.copy_id, TrackingLink.url).where(
            TrackingLink.copy_id.in_(copies), TrackingLink.kind == "click"
        )
    ):
        if url is not None:
            links[copy_id].append(url)
    for copy_id, urls in links.items():
        found[copy_id].links = tuple(urls)
    since = min(h.at for h in clicks) - BURST_WINDOW - timedelta(seconds=1)
    for copy_id, url, at in session.execute(
        sa.select(TrackingEvent.copy_id, TrackingEvent.url, TrackingEvent.at)
        .where(
            TrackingEvent.copy_id.in_(copies),
            TrackingEvent.type == "click",
            TrackingEvent.at >= since,
        )
        .order_by(TrackingEvent.id.desc())
        .limit(MAX_EARLIER_CLICKS * len(copies))
    ):
        if url is not None:
            found[copy_id].stored.append((url, at))
    return found


def _outbox_of_email(session: Session, email_id: int) -> Outbox | None:
    return session.scalar(
        sa.select(Outbox)
        .join(Decision, Decision.stored_message_id == Outbox.stored_message_id)
        .where(Decision.email_id == email_id)
    )


def events(
    *,
    session: Session,
    email_id: int,
    limit: int = 500,
    offset: int = 0,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """The email's events, oldest first; ``before_id`` (keyset): those after that event, a
    range of ``ix_tracking_events_outbox_id``."""
    outbox = _outbox_of_email(session, email_id)
    if outbox is None:
        return []
    q = sa.select(TrackingEvent).where(TrackingEvent.outbox_id == outbox.id)
    if before_id is not None:
        q = q.where(TrackingEvent.id > before_id)
    rows = session.scalars(q.order_by(TrackingEvent.id).limit(limit).offset(offset))
    return [
        {
            "id": e.id,
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

"""Operations figures and actions: pipeline and connection health, gateway counters, failures.

Everything here is read from the database, the source of truth shared by every process: the
API that answers ``/v1/ops/*`` and ``/metrics`` runs apart from the gateways and workers. An
``account_id`` of None means the operator's all-accounts view; an admin passes their account.
Counts of what happened (replies, decisions, failures) come from the counter table
(shared/counters.py); live state from bounded queries (:func:`backlog`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared import counters
from shared.db.base import utcnow
from shared.db.models import Connection, Failure, StoredMessage
from shared.services.failures import UNPROCESSED, count_unresolved, scoped

PIPELINE_STATES = ("stored", "processing", "done", "failed")
BACKLOG_STATES = UNPROCESSED
# The predicate of the partial index ``ix_stored_messages_backlog``, spelled with literals: a
# planner uses a partial index only when it can prove the query implies the index predicate,
# which a bound parameter (a generic prepared plan) does not let it do.
IN_BACKLOG = StoredMessage.status.in_([sa.literal_column(f"'{s}'") for s in BACKLOG_STATES])


def epoch(session: Session, column: Any) -> Any:
    """SQL for a UTC datetime column as seconds since 1970 (float), on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.extract("epoch", column)
    # SQLite keeps naive UTC text; julianday() reads it, 2440587.5 is the Unix epoch's day number.
    return (sa.func.julianday(column) - 2440587.5) * 86400.0


# --- status ---------------------------------------------------------------------------------


def pipeline_counts(*, session: Session, account_id: int | None) -> dict[str, int]:
    """Stored messages per status (one GROUP BY over the status index)."""
    stmt = scoped(
        sa.select(StoredMessage.status, sa.func.count()).group_by(StoredMessage.status),
        StoredMessage.account_id,
        account_id,
    )
    counts = dict.fromkeys(PIPELINE_STATES, 0)
    for status, n in session.execute(stmt):
        counts[status] = counts.get(status, 0) + n
    return counts


def oldest_unprocessed_seconds(
    *, session: Session, account_id: int | None, now: datetime | None = None
) -> float | None:
    """Age of the oldest message still ``stored`` or ``processing``; None when there is none."""
    stmt = scoped(
        sa.select(sa.func.min(StoredMessage.received_at)).where(IN_BACKLOG),
        StoredMessage.account_id,
        account_id,
    )
    return _age(session.scalar(stmt), now)


def _age(oldest: Any, now: datetime | None = None) -> float | None:
    if oldest is None:
        return None
    first: datetime = (
        oldest if isinstance(oldest, datetime) else datetime.fromisoformat(str(oldest))
    )
    if first.tzinfo is None:  # an aggregate skips the column type on SQLite: naive UTC text
        first = first.replace(tzinfo=utcnow().tzinfo)
    seconds: float = ((now or utcnow()) - first).total_seconds()
    return max(0.0, round(seconds, 3))


@dataclass(frozen=True)
class Backlog:
    counts: dict[str, int]
    oldest_seconds: float | None


def backlog(*, session: Session, now: datetime | None = None) -> Backlog:
    """Messages ``stored`` or ``processing`` and the age of the oldest, all accounts.

    One query that reads the partial index ``ix_stored_messages_backlog`` only: its cost is
    the backlog's size, not the table's (``/metrics`` runs it on every scrape).
    """
    counts, oldest = dict.fromkeys(BACKLOG_STATES, 0), None
    rows = session.execute(
        sa.select(StoredMessage.status, sa.func.count(), sa.func.min(StoredMessage.received_at))
        .where(IN_BACKLOG)
        .group_by(StoredMessage.status)
    )
    for status, n, first in rows:
        counts[status] = int(n)
        age = _age(first, now)
        if age is not None and (oldest is None or age > oldest):
            oldest = age
    return Backlog(counts, oldest)


def unresolved_by_stage(*, session: Session) -> dict[str, int]:
    """Unresolved failures by stage, all accounts (the partial index ``ix_failures_open``)."""
    rows = session.execute(
        sa.select(Failure.stage, sa.func.count())
        .where(Failure.resolved_at.is_(None))
        .group_by(Failure.stage)
    )
    return {stage: int(n) for stage, n in sorted(rows)}


def connection_health(
    *, session: Session, account_id: int | None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Each connection's status and sync lag (now − last successful sync; None before one).

    No folders or errors: an admin sees that a member's personal connection exists and its
    status, nothing more (C4)."""
    now = now or utcnow()
    stmt = scoped(
        sa.select(
            Connection.id,
            Connection.account_id,
            Connection.address,
            Connection.kind,
            Connection.status,
            Connection.last_sync_at,
            Connection.imap_host.is_not(None),
        ).order_by(Connection.id),
        Connection.account_id,
        account_id,
    )
    return [
        {
            "id": cid,
            "account_id": acc,
            "address": address,
            "kind": kind,
            "status": status,
            "imap": bool(imap),
            "last_sync_at": last,
            "lag_seconds": None if last is None else round((now - last).total_seconds(), 1),
        }
        for cid, acc, address, kind, status, last, imap in session.execute(stmt)
    ]


def gateway_counts(*, session: Session) -> dict[str, Any]:
    """SMTP end-of-DATA replies summed over every gateway: 2xx accepted, 4xx/5xx rejected."""
    by_code = {
        labels.get("code", ""): int(n)
        for labels, n in counters.read_counts(session=session, names=[counters.SMTP_REPLIES]).get(
            counters.SMTP_REPLIES, []
        )
    }
    accepted = sum(n for code, n in by_code.items() if code.startswith("2"))
    rejected = sum(n for code, n in by_code.items() if code[:1] in ("4", "5"))
    return {"accepted": accepted, "rejected": rejected, "by_code": dict(sorted(by_code.items()))}


def status_report(
    *, session: Session, account_id: int | None, depths: dict[str, int | None]
) -> dict[str, Any]:
    """The ``GET /v1/ops/status`` body (and ``inboxlog status``); gateway counts: operator only."""
    body: dict[str, Any] = {
        "queues": [{"name": name, "depth": depth} for name, depth in depths.items()],
        "pipeline": pipeline_counts(session=session, account_id=account_id),
        "oldest_unprocessed_seconds": oldest_unprocessed_seconds(
            session=session, account_id=account_id
        ),
        "connections": connection_health(session=session, account_id=account_id),
        "unresolved_failures": count_unresolved(session=session, account_id=account_id),
    }
    if account_id is None:
        body["gateway"] = gateway_counts(session=session)
    return body


# --- throughput -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Minute:
    start: datetime
    stored: int
    processed: int
    failed: int
    backlog: int


def throughput(
    *, session: Session, account_id: int | None, minutes: int, now: datetime | None = None
) -> list[Minute]:
    """Per-minute arrivals, completions and the backlog at each minute's end, oldest first.

    The backlog needs no sampling: at time t it is (messages received ≤ t) − (messages finished
    ≤ t), where a message finishes at ``processed_at`` (done) or its last update (failed). So it
    is the backlog at the window's start plus the running difference inside the window.
    """
    now = now or utcnow()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    finished_at = sa.case(
        (StoredMessage.status == "done", StoredMessage.processed_at),
        (StoredMessage.status == "failed", StoredMessage.updated_at),
        else_=None,
    )
    base = scoped(sa.select(sa.func.count()), StoredMessage.account_id, account_id)
    backlog0 = session.scalar(
        base.where(StoredMessage.received_at < start).where(
            sa.or_(finished_at.is_(None), finished_at >= start)
        )
    )
    start_epoch = start.timestamp()

    def per_minute(column: Any, extra: Any = None) -> dict[int, int]:
        offset = (epoch(session, column) - start_epoch) / 60
        # Whole minutes since the start: PostgreSQL's CAST rounds, SQLite's truncates.
        if session.get_bind().dialect.name == "postgresql":
            offset = sa.func.floor(offset)
        bucket = sa.cast(offset, sa.Integer)
        stmt = scoped(
            sa.select(bucket, sa.func.count()).where(column >= start, column < end),
            StoredMessage.account_id,
            account_id,
        )
        if extra is not None:
            stmt = stmt.where(extra)
        return {int(b): int(n) for b, n in session.execute(stmt.group_by(bucket))}

    received = per_minute(StoredMessage.received_at)
    done = per_minute(StoredMessage.processed_at, StoredMessage.status == "done")
    failed = per_minute(StoredMessage.updated_at, StoredMessage.status == "failed")
    out, backlog = [], int(backlog0 or 0)
    for i in range(minutes):
        r, d, f = received.get(i, 0), done.get(i, 0), failed.get(i, 0)
        backlog += r - d - f
        out.append(Minute(start + timedelta(minutes=i), r, d, f, max(0, backlog)))
    return out

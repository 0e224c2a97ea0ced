"""Failure records: list them, put their messages back into the pipeline, resolve them when the
messages finally succeed. The raw message stays until then."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Connection, Decision, Failure, StoredMessage
from shared.db.upsert import insert_ignore
from shared.errors import DomainError, NotFound
from shared.rules import codes
from shared.timefmt import iso

UNPROCESSED = ("stored", "processing")


def scoped(stmt: Any, column: Any, account_id: int | None) -> Any:
    """Limit ``stmt`` to one account, or not at all for the operator (``None``)."""
    return stmt if account_id is None else stmt.where(column == account_id)


class FailureResolved(DomainError):
    status = 409
    code = "failure_resolved"


def failure_view(f: Failure) -> dict[str, Any]:
    return {
        "id": f.id,
        "account_id": f.account_id,
        "stored_message_id": f.stored_message_id,
        "stage": f.stage,
        "error": f.error,
        "attempts": f.attempts,
        "created_at": iso(f.created_at),
        "resolved_at": iso(f.resolved_at),
    }


def fail_message(
    *, session: Session, stored_id: int, stage: str, error: str, attempts: int
) -> None:
    """A permanent failure: the row marked failed with its raw message kept, a failure record
    for ops, and the message's one decision (§2), ``failed``/``processing_failed`` — private to
    the owner for personal-inbox mail, like every decision of that connection (C4)."""
    row = session.get(StoredMessage, stored_id)
    if row is None:
        return
    row.status, row.updated_at = "failed", utcnow()
    session.add(
        Failure(
            account_id=row.account_id,
            stored_message_id=stored_id,
            stage=stage,
            error=error,
            attempts=attempts,
        )
    )
    owner = None
    if row.source == "personal" and row.connection_id is not None:
        owner = session.scalar(
            sa.select(Connection.user_id).where(Connection.id == row.connection_id)
        )
    insert_ignore(
        session,
        Decision,
        {
            "account_id": row.account_id,
            "stored_message_id": stored_id,
            "received_at": row.received_at,
            "source": row.source,
            "outcome": codes.FAILED,
            "codes": [codes.PROCESSING_FAILED],
            "participants": [],
            "connection_id": row.connection_id,
            "private_to_user_id": owner,
        },
        ["stored_message_id"],
    )


def list_failures(
    *,
    session: Session,
    account_id: int | None,
    include_resolved: bool = False,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Failure]:
    """Failures newest first; unresolved only unless ``include_resolved``."""
    stmt = scoped(sa.select(Failure), Failure.account_id, account_id)
    if not include_resolved:
        stmt = stmt.where(Failure.resolved_at.is_(None))
    if since is not None:
        stmt = stmt.where(Failure.created_at >= since)
    stmt = stmt.order_by(Failure.created_at.desc(), Failure.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(stmt))


def count_unresolved(*, session: Session, account_id: int | None) -> int:
    stmt = scoped(
        sa.select(sa.func.count()).where(Failure.resolved_at.is_(None)),
        Failure.account_id,
        account_id,
    )
    return int(session.scalar(stmt) or 0)


def retry_failure(*, session: Session, account_id: int | None, failure_id: int) -> int | None:
    """Put a failed message back to ``stored`` with its attempts reset; return its id to enqueue.

    None when the message is already back in the pipeline (a second click is harmless). The
    failure stays unresolved until the message ends ``done`` (see :func:`resolve_failures`).
    """
    failure = session.get(Failure, failure_id)
    if failure is None or (account_id is not None and failure.account_id != account_id):
        raise NotFound("no such failure")
    if failure.resolved_at is not None:
        raise FailureResolved("this failure is resolved: its message was processed")
    msg = session.get(StoredMessage, failure.stored_message_id)
    if msg is None:
        raise NotFound("the failed message no longer exists")
    if msg.status in UNPROCESSED:
        return None
    if msg.status == "done":  # finished by another route: nothing left to retry
        raise FailureResolved("this failure is resolved: its message was processed")
    msg.status, msg.attempts, msg.updated_at = "stored", 0, utcnow()
    # The retry decides afresh: its decision replaces the placeholder of the failure.
    session.execute(
        sa.delete(Decision).where(
            Decision.stored_message_id == msg.id, Decision.outcome == codes.FAILED
        )
    )
    return msg.id


def retry_failures_since(*, session: Session, account_id: int | None, since: datetime) -> list[int]:
    """Retry every unresolved failure created at or after ``since``; the stored ids to enqueue."""
    ids: list[int] = []
    for f in list_failures(
        session=session, account_id=account_id, since=since, limit=100_000, offset=0
    ):
        try:
            stored_id = retry_failure(session=session, account_id=account_id, failure_id=f.id)
        except FailureResolved:
            continue
        if stored_id is not None and stored_id not in ids:
            ids.append(stored_id)
    return ids


def resolve_failures(*, session: Session, stored_message_ids: Iterable[int]) -> None:
    """Mark the open failures of these messages resolved: call it, in the transaction that sets
    them ``done``, so a retried message's failure closes when the retry succeeds.

    One indexed UPDATE (``failures.stored_message_id``) that matches nothing for the usual
    message that never failed.
    """
    ids = list(stored_message_ids)
    if not ids:
        return
    session.execute(
        sa.update(Failure)
        .where(Failure.stored_message_id.in_(ids), Failure.resolved_at.is_(None))
        .values(resolved_at=utcnow())
    )

"""Failure records: list them, put their messages back into the pipeline, resolve them when the
messages finally succeed. The raw message stays until then."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared import counters
from shared.db.base import table_of, utcnow
from shared.db.models import Connection, Decision, Failure, StoredMessage
from shared.db.upsert import insert_ignore
from shared.errors import DomainError, NotFound
from shared.rules import codes
from shared.timefmt import iso

UNPROCESSED = ("stored", "processing")
PERSONAL = "personal"


def scoped(stmt: Any, column: Any, account_id: int | None) -> Any:
    """Limit ``stmt`` to one account, or not at all for the operator (``None``)."""
    return stmt if account_id is None else stmt.where(column == account_id)


class FailureResolved(DomainError):
    status = 409
    code = "failure_resolved"


@dataclass(frozen=True)
class FailureViewer:
    """Whose failures, and whose texts, a caller sees (§6: personal mail follows C4).

    ``account_id`` None: every account (the operator). ``user_id``: the caller, who sees the
    error text of failures of their own personal connections. ``own_only``: a member, who
    sees only those.
    """

    account_id: int | None
    user_id: int | None = None
    own_only: bool = False


OPERATOR = FailureViewer(account_id=None)


@dataclass(frozen=True)
class FailureRow:
    failure: Failure
    source: str
    connection_id: int | None
    # The owner of the personal connection the mail came from; None for other mail.
    owner_id: int | None

    @property
    def personal(self) -> bool:
        return self.source == PERSONAL


def _rows(viewer: FailureViewer) -> Any:
    """Failures with their message's source and the personal connection's owner (both by
    primary key); scoped to the viewer's account and, for a member, to their own."""
    owner = Connection.user_id.label("owner_id")
    stmt = (
        sa.select(Failure, StoredMessage.source, StoredMessage.connection_id, owner)
        .join(StoredMessage, StoredMessage.id == Failure.stored_message_id)
        .outerjoin(
            Connection,
            sa.and_(Connection.id == StoredMessage.connection_id, StoredMessage.source == PERSONAL),
        )
    )
    stmt = scoped(stmt, Failure.account_id, viewer.account_id)
    if viewer.own_only:
        stmt = stmt.where(StoredMessage.source == PERSONAL, owner == viewer.user_id)
    return stmt


def failure_view(row: FailureRow, viewer: FailureViewer) -> dict[str, Any]:
    """A failure as ``viewer`` may see it: the text of personal mail only for its owner."""
    f = row.failure
    redacted = row.personal and (row.owner_id is None or row.owner_id != viewer.user_id)
    return {
        "id": f.id,
        "account_id": f.account_id,
        "stored_message_id": f.stored_message_id,
        "source": row.source,
        "connection_id": row.connection_id,
        "stage": f.stage,
        "error": None if redacted else f.error,
        "redacted": redacted,
        "attempts": f.attempts,
        "created_at": iso(f.created_at),
        "resolved_at": iso(f.resolved_at),
    }


def fail_message(
    *,
    session: Session,
    stored_id: int,
    stage: str,
    error: str,
    attempts: int,
    code: str = codes.PROCESSING_FAILED,
) -> None:
    """A permanent failure: the row marked failed with its raw message kept, a failure record
    for ops, and the message's one decision (§2), ``failed``/``code`` (processing_failed,
    processing_timeout) — private to the owner for personal-inbox mail, like every decision
    of that connection (C4). Counted (shared/counters.py) once the transaction commits."""
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
    if row.source == PERSONAL and row.connection_id is not None:
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
            "codes": [code],
            "participants": [],
            "connection_id": row.connection_id,
            "private_to_user_id": owner,
            "inbox_id": row.inbox_id,
        },
        ["stored_message_id"],
    )
    source = row.source
    counters.on_commit(session, lambda: counters.count_failure(stage, source, [code]))


def list_failures(
    *,
    session: Session,
    viewer: FailureViewer,
    include_resolved: bool = False,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    before_id: int | None = None,
) -> list[FailureRow]:
    """Failures newest first (by id); unresolved only unless ``include_resolved``.

    Keyset paging: ``before_id`` continues after that failure. The orders are backed by
    ``ix_failures_open`` / ``ix_failures_account_open`` (unresolved, partial) and
    ``ix_failures_account_id_id``, so a deep page costs what the first one does.
    """
    stmt = _rows(viewer)
    if not include_resolved:
        stmt = stmt.where(Failure.resolved_at.is_(None))
    if since is not None:
        stmt = stmt.where(Failure.created_at >= since)
    if before_id is not None:
        stmt = stmt.where(Failure.id < before_id)
    stmt = stmt.order_by(Failure.id.desc()).limit(limit).offset(offset)
    return [FailureRow(f, source, cid, owner) for f, source, cid, owner in session.execute(stmt)]


def count_unresolved(*, session: Session, account_id: int | None) -> int:
    stmt = scoped(
        sa.select(sa.func.count()).where(Failure.resolved_at.is_(None)),
        Failure.account_id,
        account_id,
    )
    return int(session.scalar(stmt) or 0)


def retry_failure(
    *,
    session: Session,
    account_id: int | None,
    failure_id: int,
    viewer: FailureViewer | None = None,
) -> int | None:
    """Put a failed message back to ``stored`` with its attempts reset; return its id to enqueue.

    None when the message is already back in the pipeline (a second click is harmless). The
    failure stays unresolved until the message ends ``done`` (see :func:`resolve_failures`).
    ``viewer`` (default: every failure of ``account_id``) limits what may be retried: a
    member only the failures of their own personal connections.
    """
    viewer = viewer or FailureViewer(account_id=account_id)
    found = session.execute(_rows(viewer).where(Failure.id == failure_id)).first()
    if found is None:
        raise NotFound("no such failure")
    failure = found[0]
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
    msg.solo_attempts, msg.last_stop = 0, None
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
    for row in list_failures(
        session=session, viewer=FailureViewer(account_id=account_id), since=since, limit=100_000
    ):
        try:
            stored_id = retry_failure(
                session=session, account_id=account_id, failure_id=row.failure.id
            )
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
    failures = table_of(Failure)  # the table, not the entity: no ORM synchronization
    session.execute(
        sa.update(failures)
        .where(failures.c.stored_message_id.in_(ids), failures.c.resolved_at.is_(None))
        .values(resolved_at=utcnow())
    )

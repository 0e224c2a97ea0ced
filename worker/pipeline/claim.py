"""Stage ``claim``: take a batch of stored rows into processing (idempotent under redelivery).

Rows already done or failed are not returned: a redelivered task finds nothing left to do. Nor
is a row another task holds in processing while its claim is fresh: a duplicate task (the
sweeper's re-send racing the original, a suspect queued twice) never hands a message a live
worker is on to a second one (§6). A claim names its task (``owner``); that task, delivered again
after its worker died, takes its rows back at once, as does a task told to take over a dead one's
(``takeover``); anyone may once the claim went stale (``stale_before``: not renewed since).

A row whose earlier claim never finished (its worker was killed, or a time limit stopped it)
is a suspect: it might be the message that stops workers. Suspects found in a batch with others
are handed back to be retried alone, so no other message waits on them; a message that fails to
finish in three attempts alone becomes a failure (``processing_timeout`` when a time limit
stopped it, else ``processing_failed``), with its raw message kept (§6).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import table_of, utcnow
from shared.db.models import StoredMessage
from shared.rules import codes
from shared.services.failures import fail_message
from worker.pipeline.job import Job

MAX_ATTEMPTS = 3
TIMEOUT = "timeout"

_S = StoredMessage.__table__.c
_RETURNING = (
    _S.id,
    _S.account_id,
    _S.source,
    _S.inbox_id,
    _S.connection_id,
    _S.folder_role,
    _S.raw,
    _S.received_at,
    _S.attempts,
    _S.solo_attempts,
    _S.last_stop,
    _S.sender_verdict,
    _S.acting_user_id,
)


@dataclass
class Claimed:
    jobs: list[Job] = field(default_factory=list)  # to process now
    suspects: list[int] = field(default_factory=list)  # to retry alone
    failed: list[int] = field(default_factory=list)  # failures recorded now


def claim(
    session: Session,
    ids: list[int],
    *,
    count: bool = True,
    timed_out: frozenset[int] = frozenset(),
    owner: str | None = None,
    takeover: Iterable[str] = (),
    stale_before: datetime | None = None,
) -> Claimed:
    """Claim ``ids`` in ``session``'s transaction for the task ``owner``.

    ``count=False`` re-claims rows whose last attempt ended in a transient error (the database
    went away): that attempt proved nothing about the message. ``timed_out`` names rows whose
    last attempt the hard time limit stopped (the worker could not say so itself). Without an
    owner (tests, tools) the claim holds nobody off.
    """
    alone = len(set(ids)) == 1
    if timed_out:
        session.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id.in_(sorted(timed_out)))
            .values(last_stop=TIMEOUT)
        )
    values: dict[str, Any] = {"status": "processing", "updated_at": utcnow(), "claimed_by": owner}
    if count:
        values["attempts"] = _S.attempts + 1
        if alone:
            values["solo_attempts"] = _S.solo_attempts + 1
    # On the table, not the ORM entity: no identity-map synchronization to run per batch.
    rows = session.execute(
        sa.update(table_of(StoredMessage))
        # "not done/failed" rather than "status IN (...)": keeps the planner on the primary
        # key instead of scanning the (status, updated_at) index of a backlog.
        .where(_S.id.in_(ids), _S.status != "done", _S.status != "failed")
        .where(_free(owner, takeover, stale_before))
        .values(**values)
        .returning(*_RETURNING)
    ).all()
    out = Claimed()
    for row in sorted(rows):
        if alone and row.solo_attempts > MAX_ATTEMPTS:
            timeout = row.last_stop == TIMEOUT
            fail_message(
                session=session,
                stored_id=row.id,
                stage="worker",
                error="processing stopped by the time limit in every attempt"
                if timeout
                else "processing never completed (its worker stopped in every attempt)",
                attempts=MAX_ATTEMPTS,
                code=codes.PROCESSING_TIMEOUT if timeout else codes.PROCESSING_FAILED,
            )
            out.failed.append(row.id)
        elif not alone and count and row.attempts > 1:
            out.suspects.append(row.id)
        else:
            out.jobs.append(
                Job(
                    row.id,
                    row.account_id,
                    row.source,
                    row.inbox_id,
                    row.connection_id,
                    row.folder_role,
                    row.raw or b"",
                    row.received_at,
                    row.attempts,
                    row.sender_verdict,
                    row.acting_user_id,
                    row.solo_attempts,
                )
            )
    if out.suspects:
        # Handed back untouched: this claim does not count for them.
        session.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id.in_(out.suspects))
            .values(status="stored", attempts=StoredMessage.attempts - 1, claimed_by=None)
        )
    return out


def held_by(owner: str | None) -> sa.ColumnElement[bool]:
    """Rows in processing under this task's claim (an ownerless claim: tests, tools) — what a
    task may give back; a row another task took over since is not its to release."""
    held = _S.claimed_by.is_(None) if owner is None else _S.claimed_by == owner
    return sa.and_(_S.status == "processing", held)


def _free(
    owner: str | None, takeover: Iterable[str], stale_before: datetime | None
) -> sa.ColumnElement[bool]:
    """Rows this claim may take: not in processing, or held by nobody known, by this task or
    one it takes over, or by a claim nobody renewed since ``stale_before``."""
    mine = {o for o in (owner, *takeover) if o}
    held_ok: list[sa.ColumnElement[bool]] = [_S.claimed_by.is_(None)]
    if mine:
        held_ok.append(_S.claimed_by.in_(sorted(mine)))
    if stale_before is not None:
        held_ok.append(_S.updated_at < stale_before)
    return sa.or_(_S.status != "processing", *held_ok)

"""Re-enqueues stored-but-unprocessed messages, so an emptied or lost broker loses no mail.

A row that keeps coming back (a message that kills its worker every time) is dead-lettered
into a failure record after a bounded number of attempts.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.models import StoredMessage
from shared.intake import stale_ids
from shared.queueing import TaskSender
from shared.services.failures import fail_message

log = logging.getLogger("inboxlog.sweeper")

DEAD_LETTER_ATTEMPTS = 8


def sweep_once(sessions: sessionmaker[Session], sender: TaskSender, older_than: float) -> int:
    with sessions() as session, session.begin():
        ids = stale_ids(session=session, older_than_seconds=older_than)
        if not ids:
            return 0
        dead = list(
            session.scalars(
                sa.select(StoredMessage.id).where(
                    StoredMessage.id.in_(ids), StoredMessage.attempts >= DEAD_LETTER_ATTEMPTS
                )
            )
        )
        for stored_id in dead:
            fail_message(
                session=session,
                stored_id=stored_id,
                stage="worker",
                error="processing never completed (worker lost repeatedly)",
                attempts=DEAD_LETTER_ATTEMPTS,
            )
        retry = [i for i in ids if i not in set(dead)]
        # Touch the rows so the next sweep waits its turn again.
        session.execute(
            sa.update(StoredMessage).where(StoredMessage.id.in_(retry)).values(updated_at=utcnow())
        )
    sent = sender.process(retry)
    if retry:
        log.info("sweeper re-enqueued %s of %s stale messages", sent, len(retry))
    return sent


class Sweeper(threading.Thread):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        sender: TaskSender,
        older_than: float,
        interval: float | None = None,
    ) -> None:
        super().__init__(name="inboxlog-sweeper", daemon=True)
        self.sessions, self.sender, self.older_than = sessions, sender, older_than
        self.interval = interval if interval is not None else max(1.0, min(30.0, older_than / 2))
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                sweep_once(self.sessions, self.sender, self.older_than)
            except Exception as exc:  # database down: try again next round
                log.warning("sweep failed: %s", type(exc).__name__)

    def stop(self) -> None:
        self.stopped.set()

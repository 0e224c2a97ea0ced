"""The sweeper: stale rows go back on the (real, Redis) queue; a row that never finishes is
dead-lettered into a failure record and a ``failed`` decision, never re-enqueued again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis
import sqlalchemy as sa

from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Decision, Failure, StoredMessage
from shared.intake import IncomingMessage, store_messages
from shared.queueing import QUEUE_INTAKE, TaskSender
from tests.conftest import make_settings
from tests.e2e.mail import message
from tests.support.stack import redis_broker_url
from tests.support.world import new_world
from worker.sweeper import DEAD_LETTER_ATTEMPTS, sweep_once


def test_stale_rows_are_requeued_and_hopeless_ones_dead_lettered(
    db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    world = new_world(sessions)
    broker = redis_broker_url()
    raw = [message("alice@ours.example", [f"c{i}@acme.co.jp"]) for i in range(3)]
    with transaction(sessions) as s:
        ids = store_messages(
            session=s,
            items=[IncomingMessage(account_id=world.account_id, source="bcc", raw=r) for r in raw],
        )
        old = utcnow() - timedelta(minutes=10)
        s.execute(sa.update(StoredMessage).where(StoredMessage.id.in_(ids)).values(updated_at=old))
        # The last one has killed its worker every time.
        s.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id == ids[2])
            .values(status="processing", attempts=DEAD_LETTER_ATTEMPTS)
        )
    sender = TaskSender(make_settings(db_url, tmp_path, broker_url=broker))
    sweep_once(sessions, sender, older_than=60)

    queued = redis.Redis.from_url(broker).llen(QUEUE_INTAKE)
    assert queued == 1  # one task carrying the two stale ids (batches of up to 25)
    with sessions() as s:
        assert s.get(StoredMessage, ids[2]).status == "failed"
        [failure] = s.scalars(sa.select(Failure).where(Failure.stored_message_id == ids[2]))
        assert failure.stage == "worker" and "never completed" in failure.error
        decisions = s.execute(
            sa.select(Decision.stored_message_id, Decision.outcome, Decision.codes).where(
                Decision.stored_message_id.in_(ids)
            )
        ).all()
        assert decisions == [(ids[2], "failed", ["processing_failed"])]
        # Touched: the next sweep waits its turn instead of re-sending at once.
        assert all(
            s.get(StoredMessage, i).updated_at > utcnow() - timedelta(minutes=1) for i in ids[:2]
        )
    sweep_once(sessions, sender, older_than=60)
    assert redis.Redis.from_url(broker).llen(QUEUE_INTAKE) == 1
    engine.dispose()

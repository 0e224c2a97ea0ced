"""The sweeper puts stale rows back on the (real, Redis) queue — never a row a live worker keeps
renewing — and retention deletes the raw bytes of finished, unlogged mail (both databases)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Decision, Failure, StoredMessage
from shared.intake import IncomingMessage, stale_ids, store_messages
from shared.queueing import QUEUE_INTAKE, TaskSender
from tests.conftest import make_settings
from tests.e2e.mail import message
from tests.support.stack import redis_broker_url
from tests.support.world import new_world
from worker.claims import renew
from worker.pipeline.driver import process_many
from worker.pipeline.job import Deps
from worker.retention import purge_raw
from worker.sweeper import BACKLOG_PATIENCE, sweep_once


def _queued_ids(broker: str) -> list[int]:
    import json

    client = redis.Redis.from_url(broker)
    ids: list[int] = []
    for raw in client.lrange(QUEUE_INTAKE, 0, -1):
        body = json.loads(raw)["body"]
        import base64

        args = json.loads(base64.b64decode(body))[0]
        ids += args[0]
    return ids


def _age(sessions: sessionmaker[Session], ids: list[int], seconds: float) -> None:
    with transaction(sessions) as s:
        old = utcnow() - timedelta(seconds=seconds)
        s.execute(sa.update(StoredMessage).where(StoredMessage.id.in_(ids)).values(updated_at=old))


def _stale_rows(sessions: sessionmaker[Session], count: int, processing: list[int]) -> list[int]:
    """``count`` stored BCCs untouched for ten minutes; those at the ``processing`` positions
    as a worker left them mid-batch."""
    world = new_world(sessions)
    raw = [message("alice@ours.example", [f"c{i}@acme.co.jp"]) for i in range(count)]
    with transaction(sessions) as s:
        ids = store_messages(
            session=s,
            items=[IncomingMessage(account_id=world.account_id, source="bcc", raw=r) for r in raw],
        )
        s.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id.in_([ids[k] for k in processing]))
            .values(status="processing", attempts=1, claimed_by="a-task")
        )
    _age(sessions, ids, seconds=600)
    return ids


def test_stale_rows_are_requeued_but_not_rows_a_live_worker_renews(
    db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    broker = redis_broker_url()
    # ids[1]: its worker died mid-batch; ids[2]: a live worker is still on it.
    ids = _stale_rows(sessions, 3, processing=[1, 2])
    # What a live worker's main process does every third of the threshold (worker/claims.py):
    # a task that merely carries a row another task holds does not keep it alive.
    assert renew(sessions, {"another-task": [ids[1], ids[2]]}) == 0
    assert renew(sessions, {"a-task": [ids[2]]}) == 1
    sender = TaskSender(make_settings(db_url, tmp_path, broker_url=broker))
    # The database is shared with other tests: only this test's rows are asserted on.
    sweep_once(sessions, sender, older_than=60)
    queued = _queued_ids(broker)
    assert set(ids[:2]) <= set(queued) and ids[2] not in queued
    # The dead worker's claim is released: the re-sent task takes the row as stored.
    with sessions() as s:
        got = {r.id: (r.status, r.claimed_by) for r in s.scalars(
            sa.select(StoredMessage).where(StoredMessage.id.in_(ids)))}  # fmt: skip
    assert got[ids[1]] == ("stored", None) and got[ids[2]][0] == "processing"
    # Touched: the next sweep waits its turn instead of re-sending at once.
    sweep_once(sessions, sender, older_than=60)
    again = _queued_ids(broker)
    assert sorted(i for i in again if i in ids) == sorted(i for i in queued if i in ids)
    engine.dispose()


def test_retention_deletes_raw_bytes_of_unlogged_mail_and_keeps_decisions(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    world = new_world(sessions)
    logged = message("alice@ours.example", ["ken@acme.co.jp"], message_id="<keep@x.example>")
    duplicate = logged
    internal = message("alice@ours.example", ["alice@ours.example"])  # skipped/internal_only
    unknown = message("eve@evil.example", ["ken@acme.co.jp"])  # rejected/unknown_sender
    fresh = message("eve@evil.example", ["amy@acme.co.jp"])  # rejected, but recent
    with transaction(sessions) as s:
        ids = store_messages(
            session=s,
            items=[
                IncomingMessage(account_id=world.account_id, source="bcc", raw=r)
                for r in (logged, duplicate, internal, unknown, fresh)
            ],
        )
    outcomes = {j.stored_id: j.outcome for j in process_many(ids, Deps(sessions), "x").jobs}
    assert [outcomes[i] for i in ids] == ["logged", "duplicate", "skipped", "rejected", "rejected"]
    # A message whose failure is unresolved keeps its bytes: it may still be retried.
    with transaction(sessions) as s:
        [pending] = store_messages(
            session=s, items=[IncomingMessage(account_id=world.account_id, source="bcc", raw=b"x")]
        )
        s.get(StoredMessage, pending).status = "failed"  # type: ignore[union-attr]
        s.add(Failure(account_id=world.account_id, stored_message_id=pending, stage="x", error="y"))
        month = utcnow() - timedelta(days=31)
        s.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id.in_([*ids[:4], pending]))
            .values(received_at=month)
        )
    assert purge_raw(sessions, older_than_days=30) == 3
    with sessions() as s:
        kept = dict(
            s.execute(
                sa.select(StoredMessage.id, StoredMessage.raw.is_not(None)).where(
                    StoredMessage.id.in_([*ids, pending])
                )
            ).all()
        )
        decisions = dict(
            s.execute(
                sa.select(Decision.stored_message_id, Decision.codes).where(
                    Decision.stored_message_id.in_(ids)
                )
            ).all()
        )
    assert [kept[i] for i in ids] == [True, False, False, False, True]
    assert kept[pending] is True
    assert decisions[ids[2]] == ["internal_only"] and decisions[ids[3]] == ["unknown_sender"]
    assert purge_raw(sessions, older_than_days=30) == 0  # nothing left to do
    engine.dispose()


def test_a_draining_backlog_is_not_sent_again_but_abandoned_claims_are(
    db_url: str, tmp_path: Path
) -> None:
    """While tasks wait in the intake queue (a backlog drains), a stale stored row is most
    likely among them: it is left alone, and re-sent once the queue is empty — or, with the
    queue never empty, once it is BACKLOG_PATIENCE times as stale. A processing row whose worker
    stopped renewing its claim is re-sent at once. The queue is the real Redis list, and the
    depth the real probe's."""
    from shared.metrics import QueueProbe

    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    broker = redis_broker_url()
    ids = _stale_rows(sessions, 3, processing=[1])  # untouched for 600 s
    sender = TaskSender(make_settings(db_url, tmp_path, broker_url=broker))
    probe = QueueProbe(broker, [QUEUE_INTAKE], cache_seconds=0)
    assert sender.process([999_999_999]) == 1  # a backlog: one task waits (for nobody)
    # 600 s is stale past 120 s, but not past BACKLOG_PATIENCE x 120 s
    assert BACKLOG_PATIENCE * 120 > 600
    sweep_once(sessions, sender, older_than=120, waiting=probe.waiting)
    queued = _queued_ids(broker)
    assert ids[1] in queued and ids[0] not in queued and ids[2] not in queued
    # The same backlog, never drained: past BACKLOG_PATIENCE x 50 s, stored rows go again.
    assert BACKLOG_PATIENCE * 50 < 600
    sweep_once(sessions, sender, older_than=50, waiting=probe.waiting)
    assert {ids[0], ids[2]} <= set(_queued_ids(broker))
    redis.Redis.from_url(broker).delete(QUEUE_INTAKE)  # drained
    _age(sessions, ids, seconds=600)
    sweep_once(sessions, sender, older_than=120, waiting=probe.waiting)
    assert {ids[0], ids[2]} <= set(_queued_ids(broker))
    engine.dispose()


def test_a_re_send_the_broker_refuses_is_tried_again_at_the_next_sweep_even_in_a_backlog(
    db_url: str, tmp_path: Path
) -> None:
    """The sweeper releases a dead task's claim before re-sending its row; when the broker does
    not take the re-send, the row must not wait out BACKLOG_PATIENCE like a row that has a task
    waiting somewhere: it is stale again at once."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    ids = _stale_rows(sessions, 1, processing=[0])
    dead = TaskSender(make_settings(db_url, tmp_path, broker_url="redis://127.0.0.1:9/0"))
    assert sweep_once(sessions, dead, older_than=60) == 0
    with sessions() as s:
        row = s.get(StoredMessage, ids[0])
        assert row is not None and (row.status, row.claimed_by) == ("stored", None)
        # Picked again by the next sweep, with tasks waiting or not.
        assert ids[0] in stale_ids(
            session=s, older_than_seconds=60 * BACKLOG_PATIENCE, statuses=("stored",)
        )
    engine.dispose()

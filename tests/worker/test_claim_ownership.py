"""Claims name their task (§6): a row a live task holds is never taken by a duplicate task; the
task itself, delivered again after its worker died, takes its rows back at once; a task told to
take over a dead one does too; anyone may once the claim went stale (both databases)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import StoredMessage
from shared.intake import IncomingMessage, store_messages
from tests.e2e.mail import message
from tests.support.world import World, new_world
from worker.pipeline.claim import claim
from worker.pipeline.driver import process_many
from worker.pipeline.job import Deps


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    engine = make_engine(db_url)
    yield new_world(make_session_factory(engine))
    engine.dispose()


def _store(world: World, n: int) -> list[int]:
    raws = [message("alice@ours.example", [f"c{i}@acme.co.jp"]) for i in range(n)]
    with transaction(world.sessions) as s:
        return store_messages(
            session=s,
            items=[IncomingMessage(account_id=world.account_id, source="bcc", raw=r) for r in raws],
        )


def _claim(world: World, ids: list[int], owner: str | None, **kw: object) -> list[int]:
    with transaction(world.sessions) as s:
        return [j.stored_id for j in claim(s, ids, owner=owner, **kw).jobs]  # type: ignore[arg-type]


def _unrenewed_for(world: World, stored_id: int, seconds: float) -> None:
    with transaction(world.sessions) as s:
        s.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id == stored_id)
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def _row(world: World, stored_id: int) -> tuple[str, int, str | None]:
    with world.sessions() as s:
        row = s.get(StoredMessage, stored_id)
        assert row is not None
        return row.status, row.attempts, row.claimed_by


def test_a_row_a_live_task_holds_is_not_taken_by_a_duplicate_task(world: World) -> None:
    [x] = _store(world, 1)
    fresh = utcnow() - timedelta(seconds=60)
    assert _claim(world, [x], "task-a", stale_before=fresh) == [x]
    assert _row(world, x) == ("processing", 1, "task-a")
    # The sweeper's re-send, or the same suspect queued twice: nothing to take, nothing counted.
    assert _claim(world, [x], "task-b", stale_before=fresh) == []
    assert _row(world, x) == ("processing", 1, "task-a")


def test_the_same_task_delivered_again_takes_its_rows_back_at_once(world: World) -> None:
    ids = _store(world, 3)
    fresh = utcnow() - timedelta(seconds=60)
    assert _claim(world, ids, "task-a", stale_before=fresh) == ids
    # Its worker died; the broker delivers the same task (same id) again: every row is a
    # suspect now, handed back to be retried alone and released for whoever takes it.
    with transaction(world.sessions) as s:
        again = claim(s, ids, owner="task-a", stale_before=fresh)
    assert (again.jobs, again.suspects) == ([], ids)
    assert {_row(world, i) for i in ids} == {("stored", 1, None)}
    assert _claim(world, [ids[0]], "solo-1", stale_before=fresh) == [ids[0]]


def test_a_task_told_to_take_over_a_dead_one_takes_its_rows(world: World) -> None:
    [x] = _store(world, 1)
    fresh = utcnow() - timedelta(seconds=60)
    assert _claim(world, [x], "killed", stale_before=fresh) == [x]
    assert _claim(world, [x], "other", stale_before=fresh) == []
    assert _claim(world, [x], "requeued", takeover=["killed"], stale_before=fresh) == [x]
    assert _row(world, x) == ("processing", 2, "requeued")


def test_a_stale_claim_is_taken_by_anyone(world: World) -> None:
    [x] = _store(world, 1)
    assert _claim(world, [x], "gone") == [x]
    _unrenewed_for(world, x, seconds=120)
    assert _claim(world, [x], "other", stale_before=utcnow() - timedelta(seconds=200)) == []
    assert _claim(world, [x], "other", stale_before=utcnow() - timedelta(seconds=60)) == [x]
    assert _row(world, x) == ("processing", 2, "other")


def test_two_tasks_with_the_same_rows_process_each_message_once(world: World) -> None:
    """The driver end to end: a duplicate batch arriving while the first is being processed
    finds its rows held and leaves them; the first logs them all, each on its first attempt."""
    ids = _store(world, 4)
    deps = Deps(world.sessions, stale_after=60)
    seen: list[list[int]] = []
    import worker.pipeline.driver as driver

    real = driver.understand

    def understand_then_duplicate(job):  # type: ignore[no-untyped-def]
        if not seen:
            seen.append([j.stored_id for j in process_many(ids, deps, "x", owner="dup").jobs])
        real(job)

    mp = pytest.MonkeyPatch()
    mp.setattr(driver, "understand", understand_then_duplicate)
    try:
        first = process_many(ids, deps, "x", owner="first")
    finally:
        mp.undo()
    assert seen == [[]]
    assert [j.outcome for j in first.jobs] == ["logged"] * 4
    assert {_row(world, i)[:2] for i in ids} == {("done", 1)}


def test_a_task_gives_back_only_rows_it_still_holds(world: World) -> None:
    """The soft time limit's release (driver.py) goes through held_by: a row another task took
    over since the claim went stale is not the first task's to put back."""
    from worker.pipeline.claim import held_by

    [x] = _store(world, 1)
    assert _claim(world, [x], "slow") == [x]
    _unrenewed_for(world, x, seconds=120)
    assert _claim(world, [x], "new", stale_before=utcnow() - timedelta(seconds=60)) == [x]
    with transaction(world.sessions) as s:
        for owner in ("slow", None):
            s.execute(
                sa.update(StoredMessage)
                .where(StoredMessage.id == x, held_by(owner))
                .values(status="stored", claimed_by=None)
            )
    assert _row(world, x) == ("processing", 2, "new")
    with transaction(world.sessions) as s:
        s.execute(
            sa.update(StoredMessage)
            .where(StoredMessage.id == x, held_by("new"))
            .values(status="stored", claimed_by=None)
        )
    assert _row(world, x) == ("stored", 2, None)

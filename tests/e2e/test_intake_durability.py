"""Nothing accepted is lost: a worker killed with SIGKILL mid-flood, and an emptied broker."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import redis
import sqlalchemy as sa

from shared.db.models import Decision, LoggedEmail
from tests.e2e.mail import message
from tests.support.stack import Stack, wait_for
from tests.support.world import World, new_world


def flood(stack: Stack, world: World, n: int, sessions: int = 8, tag: str = "f") -> None:
    """n distinct messages over several concurrent SMTP sessions; every one must get 250."""

    def send_range(start: int) -> None:
        with stack.dialogue() as smtp:
            for i in range(start, n, sessions):
                raw = message(
                    "alice@ours.example",
                    [f"c{i % 50}@cust{i % 7}.example"],
                    subject=f"{tag} {i}",
                    message_id=f"<{tag}-{i}-{world.account_id}@t.example>",
                )
                assert smtp.sendmail("alice@ours.example", [world.bcc], raw) == {}

    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(send_range, range(sessions)))


def counts(world: World) -> tuple[int, int, int]:
    with world.sessions() as s:
        emails = s.scalar(
            sa.select(sa.func.count())
            .select_from(LoggedEmail)
            .where(LoggedEmail.account_id == world.account_id)
        )
        decisions = s.scalar(
            sa.select(sa.func.count())
            .select_from(Decision)
            .where(Decision.account_id == world.account_id)
        )
        distinct = s.scalar(
            sa.select(sa.func.count(sa.distinct(Decision.stored_message_id))).where(
                Decision.account_id == world.account_id
            )
        )
    return emails, decisions, distinct


def test_worker_sigkilled_mid_flood_loses_nothing_and_logs_nothing_twice(stack: Stack) -> None:
    world = new_world(stack.sessions)
    sender = threading.Thread(target=flood, args=(stack, world, 500))
    sender.start()
    wait_for(lambda: counts(world)[1] >= 100, 60)
    stack.kill("worker")
    killed_at = counts(world)[1]
    sender.join(120)
    assert killed_at < 500, "the kill must land mid-flood"
    stack.start_worker()
    wait_for(lambda: counts(world)[1] >= 500, 120, lambda: stack.log("worker"))
    assert counts(world) == (500, 500, 500)
    assert len(world.stored()) == 500 and {r.status for r in world.stored()} == {"done"}


def test_emptied_broker_loses_nothing(stack: Stack) -> None:
    world = new_world(stack.sessions)
    stack.stop("worker")
    flood(stack, world, 200, tag="b")
    db = int(stack.broker_url.rsplit("/", 1)[1])
    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    stack.start_worker()
    wait_for(lambda: counts(world)[1] >= 200, 120, lambda: stack.log("worker"))
    assert counts(world) == (200, 200, 200)

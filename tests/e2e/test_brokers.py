"""The essentials on both supported brokers (§8): Redis and RabbitMQ.

One stack per broker (gateway, worker and API processes on PostgreSQL), reaching its broker
through a relay the test can cut (tests/support/brokers.py), so "the broker goes down" is real
for every process without stopping the shared server. On each broker: a BCC logged end to end;
/readyz and the queue depths of the ops status and /metrics read the broker; a worker SIGKILLed
mid-task has its message logged once; mail taken in while the broker is down is logged, once,
when it returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa

from shared.db.models import Decision, LoggedEmail, StoredMessage
from shared.queueing import QUEUE_INTAKE
from tests.conftest import BROKERS, broker_url_for
from tests.e2e.mail import message
from tests.e2e.test_intake_durability import flood
from tests.support.brokers import RABBITMQ_PORT, CuttableLink
from tests.support.stack import Stack, make_stack, wait_for
from tests.support.world import World, new_world

# Bounds for a loaded machine, not expectations.
SETTLE = 90.0
HOLD = "HOLD-ME"


@dataclass
class Run:
    stack: Stack
    link: CuttableLink
    kind: str  # "redis" | "rabbitmq"


@pytest.fixture(scope="module", params=BROKERS)
def run(
    request: pytest.FixtureRequest,
    postgresql_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    kind = request.param
    broker = broker_url_for(request, kind)
    link = CuttableLink(("127.0.0.1", 6379 if kind == "redis" else RABBITMQ_PORT)).restore()
    s = make_stack(tmp_path_factory.mktemp(f"broker-{kind}"), postgresql_url, broker)
    s.env["INBOXLOG_BROKER_URL"] = link.url_for(broker)
    try:
        r = Run(s, link, kind)
        s.start_gateway()
        _start_worker(r)
        s.start_api()
        yield r
    finally:
        s.close()
        link.cut()


def _start_worker(run: Run) -> None:
    """The module's worker: the first process to meet a message marked HOLD sleeps on it."""
    once = str(run.stack.workdir / "hold-once")
    run.stack.start_worker(
        faults=[{"stage": "gather", "marker": HOLD, "action": "sleep", "once": once}]
    )


def _received(log: str) -> list[str]:
    return re.findall(r"Task inboxlog\.process_messages\[([0-9a-f-]+)\] received", log)


@pytest.fixture
def stack(run: Run) -> Stack:
    return run.stack


def _count(stack: Stack, model: type, account_id: int) -> int:
    with stack.sessions() as s:
        return int(
            s.scalar(
                sa.select(sa.func.count()).select_from(model).where(model.account_id == account_id)
            )
        )


def _status(stack: Stack) -> dict:
    resp = httpx.get(
        stack.api_base + "/v1/ops/status",
        headers={"Authorization": f"Bearer {stack.env['INBOXLOG_ADMIN_TOKEN']}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _depth(stack: Stack) -> int | None:
    [intake] = [q for q in _status(stack)["queues"] if q["name"] == QUEUE_INTAKE]
    return intake["depth"]  # type: ignore[no-any-return]


def _metrics(stack: Stack) -> str:
    resp = httpx.get(
        stack.api_base + "/metrics",
        headers={"Authorization": f"Bearer {stack.env['INBOXLOG_ADMIN_TOKEN']}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp.text


@pytest.fixture
def world(stack: Stack) -> World:
    return new_world(stack.sessions)


def test_bcc_is_logged_end_to_end(stack: Stack, world: World) -> None:
    raw = message("Alice <alice@ours.example>", ["Ken <ken@mail.acme.co.jp>"])
    assert stack.send(raw, [world.bcc], "alice@ours.example") == {}
    [decision] = wait_for(lambda: world.decisions(), 60, lambda: stack.log("worker"))
    assert decision.outcome == "logged"
    assert len(world.emails()) == 1


def test_readiness_and_queue_depths_read_the_broker(run: Run, world: World) -> None:
    stack = run.stack
    ready = httpx.get(stack.api_base + "/readyz", timeout=30)
    assert (ready.status_code, ready.json()["checks"]) == (
        200,
        {"database": "ok", "broker": "ok"},
    )
    stack.stop("worker")  # tasks wait in the queue
    flood(stack, world, 30, sessions=3, tag=f"depth-{run.kind}")
    depth = wait_for(lambda: (d := _depth(stack)) and d > 0 and d, 30)
    assert 1 <= depth <= 30  # tasks carry batches of ids
    assert f'inboxlog_queue_depth{{queue="{QUEUE_INTAKE}"}}' in _metrics(stack)
    assert "inboxlog_broker_up 1.0" in _metrics(stack)
    _start_worker(run)
    wait_for(
        lambda: _count(stack, Decision, world.account_id) >= 30, SETTLE, lambda: stack.log("worker")
    )
    wait_for(lambda: _depth(stack) == 0, 30)
    assert _count(stack, LoggedEmail, world.account_id) == 30


def test_worker_sigkilled_mid_task_has_its_message_logged_once(run: Run, world: World) -> None:
    stack = run.stack
    raw = message("alice@ours.example", ["ken@acme.co.jp"], body=f"{HOLD} please")
    assert stack.send(raw, [world.bcc], "alice@ours.example") == {}
    wait_for(
        lambda: [r.status for r in world.stored()] == ["processing"],
        60,
        lambda: stack.log("worker"),
    )
    [task_id] = _received(stack.log("worker"))[-1:]
    stack.kill("worker")  # mid-task: the task was taken and never acknowledged
    _start_worker(run)
    wait_for(lambda: world.decisions(), SETTLE, lambda: stack.log("worker"))
    assert [r.status for r in world.stored()] == ["done"]
    assert (len(world.decisions()), len(world.emails())) == (1, 1)
    if run.kind == "rabbitmq":
        # RabbitMQ gives the unacknowledged task back the moment its worker's connection dies:
        # the same task reaches the replacement. (Redis keeps it for its visibility timeout;
        # there the sweeper re-enqueues the stale row as a new task.)
        assert task_id in _received(stack.log("worker"))


def test_mail_taken_in_while_the_broker_is_down_is_logged_once_when_it_returns(
    run: Run, world: World
) -> None:
    stack, link = run.stack, run.link
    link.cut()
    try:
        flood(stack, world, 40, sessions=2, tag=f"down-{run.kind}")
        assert _count(stack, StoredMessage, world.account_id) == 40  # every one answered 250
        # Nothing can have been processed: no worker can reach the broker.
        assert _count(stack, Decision, world.account_id) == 0
        ready = httpx.get(stack.api_base + "/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith(
            "unavailable"
        )
        wait_for(lambda: _depth(stack) is None, 30)
        assert "inboxlog_broker_up 0.0" in _metrics(stack)
    finally:
        link.restore()
    wait_for(
        lambda: _count(stack, Decision, world.account_id) >= 40,
        SETTLE,
        lambda: stack.log("worker")[-3000:] + stack.log("gateway")[-1000:],
    )
    assert (
        _count(stack, LoggedEmail, world.account_id),
        _count(stack, Decision, world.account_id),
    ) == (40, 40)
    assert httpx.get(stack.api_base + "/readyz", timeout=30).status_code == 200

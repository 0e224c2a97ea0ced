"""Bounded work on a real stack (gateway and Celery workers on PostgreSQL and Redis, §6): a
message that exceeds the task time limit, hangs in C code, or kills its worker is retried alone
and then fails; no other message waits for it longer than one time limit; a live worker's message
is never handed to a second worker; and a worker's lock never holds up SMTP intake."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shared.db.models import Decision, Failure, StoredMessage
from tests.e2e.mail import message
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for
from tests.support.world import World, new_world

LIMIT = 8.0  # INBOXLOG_TASK_TIME_LIMIT of these stacks (the soft limit comes 1 s earlier)


@pytest.fixture
def make(postgresql_url: str, tmp_path: Path) -> Iterator[Any]:
    stacks: list[Stack] = []

    def build(faults: list[dict[str, Any]], **env: str) -> Stack:
        stack = make_stack(
            tmp_path / f"s{len(stacks)}",
            postgresql_url,
            redis_broker_url(),
            **{"INBOXLOG_TASK_TIME_LIMIT": str(LIMIT), **env},
        )
        (tmp_path / f"s{len(stacks)}").mkdir(exist_ok=True)
        stacks.append(stack)
        stack.start_gateway()
        stack.start_worker(faults=faults)
        return stack

    yield build
    for stack in stacks:
        stack.close()


def send_all(stack: Stack, world: World, raws: list[bytes]) -> None:
    with stack.dialogue() as smtp:
        for raw in raws:
            assert smtp.sendmail("alice@ours.example", [world.bcc], raw) == {}


def rows(stack: Stack, world: World) -> dict[str, Any]:
    """Per subject: the stored row and its decision."""
    with stack.sessions() as s:
        found = s.execute(
            sa.select(StoredMessage, Decision)
            .outerjoin(Decision, Decision.stored_message_id == StoredMessage.id)
            .where(StoredMessage.account_id == world.account_id)
        ).all()
        out = {}
        for row, decision in found:
            subject = (decision.subject if decision else None) or _subject(bytes(row.raw or b""))
            out[subject] = (row, decision)
        return out


def _subject(raw: bytes) -> str:
    for line in raw.split(b"\n"):
        if line.lower().startswith(b"subject:"):
            return line[8:].strip().decode()
    return ""


def normal(n: int, tag: str) -> list[bytes]:
    return [
        message("alice@ours.example", [f"c{i}@acme.example"], subject=f"{tag} {i}")
        for i in range(n)
    ]


def _failure_codes(stack: Stack, stored_id: int) -> tuple[list[Any], list[str]]:
    with stack.sessions() as s:
        failures = s.execute(
            sa.select(Failure.stage, Failure.attempts).where(Failure.stored_message_id == stored_id)
        ).all()
        codes = s.scalar(sa.select(Decision.codes).where(Decision.stored_message_id == stored_id))
    return [tuple(f) for f in failures], codes or []


@pytest.mark.parametrize(
    ("action", "stage", "code"),
    [
        ("sleep", "gather", "processing_timeout"),  # Python: the soft limit stops it
        ("spin", "understand", "processing_timeout"),  # C code: only the hard limit does
        ("kill", "understand", "processing_failed"),  # it kills its worker
    ],
)
def test_a_message_that_stops_its_worker_is_retried_alone_then_fails_and_delays_no_other(
    make: Any, action: str, stage: str, code: str
) -> None:
    stack = make([{"stage": stage, "marker": "POISON", "action": action, "seconds": 3600}])
    world = new_world(stack.sessions)
    poison = message("alice@ours.example", ["x@acme.example"], subject="POISON")
    others = [*normal(20, "before"), poison, *normal(20, "after")]
    send_all(stack, world, others)  # one SMTP session: they share batches with the poison
    wait_for(
        lambda: sum(1 for k, (_, d) in rows(stack, world).items() if k != "POISON" and d) == 40,
        LIMIT * 4 + 30,
        lambda: stack.log("worker"),
    )
    got = rows(stack, world)
    waits = []
    for subject, (row, decision) in got.items():
        if subject != "POISON":
            assert decision.outcome == "logged", subject
            assert row.attempts <= 2  # at most the batch it shared with the poison, and its own
            waits.append((row.processed_at - row.received_at).total_seconds())
    # Nobody waited for the poison much longer than one time limit (a loaded machine's margin).
    assert max(waits) < LIMIT + 15, sorted(waits)[-5:]
    stored_id = got["POISON"][0].id
    wait_for(
        lambda: _failure_codes(stack, stored_id)[1] == [code],
        LIMIT * 5 + 60,
        lambda: stack.log("worker")[-3000:],
    )
    with stack.sessions() as s:
        row = s.get(StoredMessage, stored_id)
        assert row is not None and row.status == "failed" and row.raw  # kept for a retry
        assert row.solo_attempts >= 3
    assert "POISON" not in stack.log("worker")  # a subject is mail: never logged


def test_a_message_a_live_worker_is_on_is_never_handed_to_a_second_worker(make: Any) -> None:
    """Slower than the sweeper's threshold (3 s here), within the time limit: one attempt."""
    stack = make([{"stage": "gather", "marker": "SLOWISH", "action": "sleep", "seconds": 5}])
    world = new_world(stack.sessions)
    send_all(stack, world, [message("alice@ours.example", ["x@acme.example"], subject="SLOWISH")])
    wait_for(lambda: rows(stack, world).get("SLOWISH", (None, None))[1] is not None, 60)
    row, decision = rows(stack, world)["SLOWISH"]
    assert decision.outcome == "logged"
    assert (row.attempts, row.status) == (1, "done")


def test_a_worker_holding_an_inbox_lock_never_delays_smtp_intake_for_that_inbox(
    make: Any, tmp_path: Path
) -> None:
    """§6 Isolation: a 250 never waits for a worker's lock or transaction. The worker stops inside
    the batch transaction of a team message (after threading, holding its inbox's lock) until the
    test lets it go; meanwhile mail for that same inbox is answered at once, and once released
    every message is logged."""
    entered, release = tmp_path / "entered", tmp_path / "release"
    stack = make(
        [
            {
                "stage": "converse",
                "marker": "HOLD",
                "action": "hold",
                "entered": str(entered),
                "release": str(release),
                "seconds": 90,  # below the server's idle-in-transaction limit (120 s)
            }
        ],
        INBOXLOG_TASK_TIME_LIMIT="120",
    )
    world = new_world(stack.sessions)
    _, team = world.inbox("Support", [world.admin_id])
    hold = message("cust@cust.example", ["support@ours.example"], subject="HOLD")
    with stack.dialogue() as smtp:
        smtp.sendmail("cust@cust.example", [team], hold)
    wait_for(entered.exists, 60, lambda: stack.log("worker"))
    assert _in_transaction(stack) > 0, "the held worker sits in its batch transaction"

    def one(i: int) -> float:
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=60) as smtp:
            smtp.sendmail(
                "cust@cust.example",
                [team],
                message("cust@cust.example", ["support@ours.example"], subject=f"more {i}"),
            )
        return time.monotonic() - t0

    with ThreadPoolExecutor(4) as pool:
        took = list(pool.map(one, range(8)))
    held = _in_transaction(stack) > 0
    release.touch()
    assert held, "every 250 came while the worker still held its transaction"
    assert max(took) < 5, took
    subjects = {"HOLD", *(f"more {i}" for i in range(8))}

    def all_logged() -> bool:
        found = rows(stack, world)
        return subjects <= found.keys() and all(found[s][1] is not None for s in subjects)

    wait_for(all_logged, 60, lambda: stack.log("worker"))
    assert {rows(stack, world)[s][1].outcome for s in subjects} == {"logged"}


def _in_transaction(stack: Stack) -> int:
    """Backends of this database sitting in an open transaction: the stopped worker's."""
    with stack.sessions() as s:
        return int(
            s.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                    "AND datname = current_database()"
                )
            )
            or 0
        )

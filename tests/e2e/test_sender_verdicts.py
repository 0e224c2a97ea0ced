"""What the gateway finds about a sender reaches the decision. §4: anyone can write to a team
inbox's forward_address; a message there with one of our addresses in From is one of our replies
only when that From is authenticated (DKIM aligned with the From domain, or a trusted
Authentication-Results pass). §6: a copy refused for one route is recorded, never dropped. Real
SMTP into the gateway, then the pipeline, on PostgreSQL; DNS for DKIM from an injected resolver."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
import sqlalchemy as sa

from shared.db.engine import make_engine, make_session_factory
from shared.db.models import LoggedEmail, StoredMessage
from tests.conftest import make_settings
from tests.e2e.mail import message
from tests.support.dkim_keys import dkim_key
from tests.support.inproc_gateway import InProcessGateway
from tests.support.world import World, new_world
from worker.pipeline.driver import process_many
from worker.pipeline.job import Deps

PRIVATE, TXT = dkim_key()


@pytest.fixture
def env(postgresql_url: str, tmp_path: Path) -> Iterator[tuple[InProcessGateway, World]]:
    engine = make_engine(postgresql_url)
    sessions = make_session_factory(engine)
    dns = {b"sel._domainkey.ours.example.": TXT}
    g = InProcessGateway(
        make_settings(postgresql_url, tmp_path),
        sessions,
        sender=None,
        dnsfunc=lambda name, timeout=5: dns.get(name),
    )
    yield g, new_world(sessions)
    g.close()
    engine.dispose()


def deliver(g: InProcessGateway, world: World, team: str, raw: bytes) -> tuple[dict, LoggedEmail]:
    with smtplib.SMTP("127.0.0.1", g.port, timeout=30) as s:
        s.sendmail("alice@ours.example", [team], raw)
    with world.sessions() as s:
        stored = s.scalars(
            sa.select(StoredMessage.id).where(
                StoredMessage.account_id == world.account_id, StoredMessage.status == "stored"
            )
        ).all()
    [job] = process_many(list(stored), Deps(world.sessions), "log.localhost").jobs
    with world.sessions() as s:
        email = s.get(LoggedEmail, job.email_id)
        assert email is not None
        s.expunge(email)
    return {"codes": job.decision.codes, "outcome": job.outcome}, email


def test_an_unauthenticated_internal_from_is_incoming_and_attributed_to_nobody(env) -> None:  # type: ignore[no-untyped-def]
    g, world = env
    _, team = world.inbox("Support", [world.admin_id])
    forged = message("alice@ours.example", ["customer@cust.example"], subject="Refund approved")
    decision, email = deliver(g, world, team, forged)
    assert (email.direction, email.logged_by_user_id) == ("incoming", None)
    assert decision["outcome"] == "logged"
    assert "unverified_internal_sender" in decision["codes"]


def test_a_dkim_signed_internal_from_is_an_outgoing_reply_of_that_user(env) -> None:  # type: ignore[no-untyped-def]
    g, world = env
    _, team = world.inbox("Support", [world.admin_id])
    raw = message("alice@ours.example", ["customer@cust.example"], subject="Your order")
    signed = dkim.sign(raw, b"sel", b"ours.example", PRIVATE, include_headers=[b"from", b"to"])
    decision, email = deliver(g, world, team, signed + raw)
    assert (email.direction, email.logged_by_user_id) == ("outgoing", world.admin_id)
    assert "unverified_internal_sender" not in decision["codes"]


def test_a_trusted_authentication_results_pass_counts_too(env) -> None:  # type: ignore[no-untyped-def]
    g, world = env
    world.settings(trusted_authserv_ids=["mx.ours.example"])
    _, team = world.inbox("Support", [world.admin_id])
    raw = message(
        "alice@ours.example",
        ["customer@cust.example"],
        headers={"Authentication-Results": "mx.ours.example; dmarc=pass header.from=ours.example"},
    )
    _, email = deliver(g, world, team, raw)
    assert (email.direction, email.logged_by_user_id) == ("outgoing", world.admin_id)


def test_a_copy_refused_for_one_route_gets_its_rejected_decision(env) -> None:  # type: ignore[no-untyped-def]
    """§6: every recipient of a transaction answered 250 gets its decision."""
    g, world = env
    _, team = world.inbox("Support", [world.admin_id])
    raw = message("customer@cust.example", ["support@ours.example"], subject="Hello both")
    with smtplib.SMTP("127.0.0.1", g.port, timeout=30) as s:
        assert s.sendmail("customer@cust.example", [team, world.bcc], raw) == {}
    with world.sessions() as s:
        stored = s.scalars(
            sa.select(StoredMessage.id).where(StoredMessage.account_id == world.account_id)
        ).all()
    jobs = process_many(list(stored), Deps(world.sessions), "log.localhost").jobs
    got = sorted((j.source, j.outcome, j.decision.codes) for j in jobs)
    assert got == [("bcc", "rejected", ("unknown_sender",)), ("team", "logged", ())]

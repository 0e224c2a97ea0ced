"""§6 Over-long values — display names, Message-IDs, subjects, envelope senders — are truncated
where they are stored (the raw message keeps them whole); they never make a message fail, nor a
commit that other SMTP sessions share. Real SMTP into the gateway on PostgreSQL, whose VARCHAR
limits are the ones that bite, then the pipeline."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.db.engine import make_engine, make_session_factory
from shared.db.models import Contact, Conversation, EmailParticipant, LoggedEmail, StoredMessage
from tests.conftest import make_settings
from tests.e2e.mail import message
from tests.support.inproc_gateway import InProcessGateway
from tests.support.world import World, new_world
from worker.pipeline.driver import process_many
from worker.pipeline.job import Deps


@pytest.fixture
def env(postgresql_url: str, tmp_path: Path) -> Iterator[tuple[InProcessGateway, World]]:
    engine = make_engine(postgresql_url)
    sessions = make_session_factory(engine)
    g = InProcessGateway(make_settings(postgresql_url, tmp_path), sessions, sender=None)
    yield g, new_world(sessions)
    g.close()
    engine.dispose()


def test_a_400_character_envelope_sender_fails_neither_its_session_nor_concurrent_ones(
    env: tuple[InProcessGateway, World],
) -> None:
    g, world = env
    long_sender = "b" * 388 + "@ours.example"  # 400 characters; the column holds 320

    def send(sender: str) -> int:
        with smtplib.SMTP("127.0.0.1", g.port, timeout=30) as s:
            s.ehlo("client.example")
            s.mail(sender)
            s.rcpt(world.bcc)
            return s.data(message("alice@ours.example", ["ken@acme.example"]))[0]

    senders = [long_sender] + [f"ok{i}@ours.example" for i in range(3)]
    for _ in range(3):  # several rounds: the four share group commits
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(send, senders)) == [250, 250, 250, 250]
    with world.sessions() as s:
        stored = s.scalars(
            sa.select(StoredMessage.envelope_from).where(
                StoredMessage.account_id == world.account_id
            )
        ).all()
    assert len(stored) == 12
    assert long_sender[:320] in stored


def test_over_long_header_values_are_cut_where_stored_and_the_message_is_logged(
    env: tuple[InProcessGateway, World],
) -> None:
    g, world = env
    _, team = world.inbox("Support", [world.admin_id])
    name = "N" * 1000
    msg_id = "<" + "i" * 2000 + "@ours.example>"
    subject = "S" * 3000
    domain = "d" * 60 + "." + "e" * 60 + "." + "f" * 60 + "." + "g" * 60 + ".example"
    raw = message(
        f'"{name}" <ken@{domain}>',
        ["support@ours.example"],
        subject=subject,
        message_id=msg_id,
        headers={"References": msg_id},
    )
    with smtplib.SMTP("127.0.0.1", g.port, timeout=30) as s:
        assert s.sendmail("ken@acme.example", [team], raw) == {}
        reply = raw.replace(b"Subject: ", b"Subject: Re: ", 1)
        assert s.sendmail("ken@acme.example", [team], reply.replace(b"<iii", b"<jjj", 1)) == {}
    with world.sessions() as s:
        ids = s.scalars(
            sa.select(StoredMessage.id).where(StoredMessage.account_id == world.account_id)
        ).all()
    jobs = process_many(sorted(ids), Deps(world.sessions), "log.localhost").jobs
    assert [j.outcome for j in jobs] == ["logged", "logged"], [j.error for j in jobs]
    with world.sessions() as s:
        first = s.get(LoggedEmail, jobs[0].email_id)
        assert first is not None
        assert first.from_name == name[:500] and len(first.message_id or "") == 998
        assert first.subject == subject  # a text column: kept whole
        contacts = s.scalars(
            sa.select(Contact.email).where(Contact.account_id == world.account_id)
        ).all()
        assert f"ken@{domain}" in contacts
        names = s.scalars(
            sa.select(EmailParticipant.name).where(EmailParticipant.email_id == first.id)
        ).all()
        assert name[:500] in names
        # The reply names the first in References, cut the same way: one conversation.
        conversations = s.scalars(
            sa.select(Conversation.id).where(Conversation.account_id == world.account_id)
        ).all()
        assert len(conversations) == 1
        kept = bytes(s.get(StoredMessage, jobs[0].stored_id).raw)  # the raw message: whole
        assert msg_id.encode() in kept and name.encode() in kept

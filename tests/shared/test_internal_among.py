"""What a send asks about its recipients (§9: internal ones get the untracked copy) reads only
those addresses, and agrees with the account-wide reading the logging decision uses (§4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import make_engine, make_session_factory
from shared.db.models import Account
from shared.services.account_facts import internal_among, load_account_facts
from tests.support.world import new_world


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_it_agrees_with_the_account_wide_reading(sessions: sessionmaker[Session]) -> None:
    world = new_world(sessions, admin_email="boss@acme-internal.example")
    world.settings(internal_domains=["acme.example"])
    member = world.user("kim@elsewhere.example")
    world.connect("kim.personal@gmail.example", kind="personal", user_id=member)
    world.connect("unproven@gmail.example", kind="personal", user_id=member, verified=False)
    inbox_id, inbox_intake = world.inbox("Support", [member])
    world.connect("support@help.example", kind="team", inbox_id=inbox_id)
    asked = [
        "boss@acme-internal.example",  # a user
        "kim@elsewhere.example",  # a user
        "kim.personal@gmail.example",  # a proven personal connection
        "unproven@gmail.example",  # not proven: nobody's yet (C7)
        "support@help.example",  # a team connection
        "anyone@acme.example",  # an internal domain
        "sub@eu.acme.example",  # its subdomain
        world.bcc,  # the intake addresses
        world.forward,
        inbox_intake,
        "stranger@log.localhost",  # at the logging domain but no intake
        "customer@customer.example",
        "acme.example@customer.example",
    ]
    with sessions() as s:
        account = s.get(Account, world.account_id)
        assert account is not None
        facts = load_account_facts(s, account, world.domain)
        expected = {a for a in asked if facts.is_internal(a)}
        assert internal_among(s, account, asked, world.domain) == expected
    assert expected == set(asked) - {
        "unproven@gmail.example",
        "stranger@log.localhost",
        "customer@customer.example",
        "acme.example@customer.example",
    }

"""The token keeper against a real (local) authorization server, on both databases (§10):
refresh before expiry with rotation saved, one refresh across processes, refusals that stop
everything until a reconnect, provider outages that change no status for 15 minutes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory
from shared.db.models import Connection, OAuthGrant
from shared.networks import Networks
from shared.oauth.errors import ReauthRequired, TokenUnavailable
from shared.oauth.tokens import TokenKeeper
from tests.support.oauth_flow import (
    LOOPBACK,
    make_due,
    obtain_token,
    provider_env,
    provider_from,
    register_client,
    store_grant,
)
from tests.support.oauth_server import LocalOAuthServer
from tests.support.world import new_world

REDIRECT = "http://127.0.0.1:9/oauth/callback"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOAuthServer]:
    with LocalOAuthServer() as s:
        yield s


@pytest.fixture
def setup(db_url: str, server: LocalOAuthServer):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    key = Fernet.generate_key().decode()
    box = SecretBox(key)
    client_id, secret = register_client(server, REDIRECT)
    env = provider_env(server, client_id=client_id, client_secret=secret)
    provider = provider_from(env)
    world = new_world(sessions, admin_email=f"admin-{client_id}@ours.example")
    inbox_id, _ = world.inbox("Support", [world.admin_id])
    email = f"support-{client_id}@ours.example"
    cid = world.connect(email, kind="team", inbox_id=inbox_id)
    server.next_consent(email)
    store_grant(sessions, box, cid, provider, obtain_token(provider, REDIRECT), issued_at=utcnow())
    keeper = TokenKeeper(sessions, box, {"local": provider}, allowed=LOOPBACK)
    yield sessions, box, keeper, cid, email, db_url, key, env
    engine.dispose()


def _grant(sessions: sessionmaker[Session], cid: int) -> OAuthGrant:
    with sessions() as s:
        grant = s.get(OAuthGrant, cid)
        assert grant is not None
        s.expunge(grant)
        return grant


def _connection(sessions: sessionmaker[Session], cid: int) -> tuple[str, str | None]:
    with sessions() as s:
        row = s.execute(
            sa.select(Connection.status, Connection.last_error).where(Connection.id == cid)
        ).one()
        return row[0], row[1]


def test_a_fresh_token_is_used_as_is_and_a_due_one_is_refreshed_with_rotation_saved(
    setup, server: LocalOAuthServer
) -> None:  # type: ignore[no-untyped-def]
    sessions, box, keeper, cid, email, *_ = setup
    before = server.count("refresh_token", email=email)
    first = keeper.access_token(cid)
    assert server.count("refresh_token", email=email) == before  # fresh: no request
    old = _grant(sessions, cid)
    old_refresh = box.decrypt(old.refresh_token_enc or "")

    make_due(sessions, cid, utcnow())
    fresh = keeper.access_token(cid)
    assert server.count("refresh_token", email=email, outcome="ok") == before + 1
    new = _grant(sessions, cid)
    assert fresh.value != first.value and new.version == old.version + 1 and new.refreshes == 1
    new_refresh = box.decrypt(new.refresh_token_enc or "")
    # Rotation: the provider revoked the old refresh token, and the new one was saved with
    # the access token it came with — the next refresh works.
    assert new_refresh != old_refresh and old_refresh in server.revoked
    make_due(sessions, cid, utcnow())
    keeper.access_token(cid)
    assert server.count("refresh_token", email=email, outcome="ok") == before + 2
    assert server.count("refresh_token", email=email, outcome="invalid_grant") == 0
    # Stored encrypted: no token in clear in the row.
    with sessions() as s:
        raw = s.execute(sa.text(f"SELECT * FROM oauth_grants WHERE connection_id = {cid}")).one()
    assert not set(map(str, raw)) & server.all_secrets()


_CHILD = textwrap.dedent(
    """
    import hashlib, json, os, sys
    from shared.crypto import SecretBox
    from shared.db.engine import make_engine, make_session_factory
    from shared.oauth.providers import providers_from_env
    from shared.oauth.tokens import TokenKeeper
    from shared.networks import Networks
    env = json.loads(os.environ["TEST_PROVIDER_ENV"])
    keeper = TokenKeeper(
        make_session_factory(make_engine(os.environ["TEST_DB"])),
        SecretBox(os.environ["TEST_KEY"]),
        providers_from_env(env),
        allowed=Networks.parse("127.0.0.0/8"),
    )
    print("ready", flush=True)
    sys.stdin.readline()  # both start asking at once
    token = keeper.access_token(int(os.environ["TEST_CID"]))
    print(hashlib.sha256(token.value.encode()).hexdigest(), flush=True)
    """
)


def test_two_processes_needing_a_refresh_at_once_make_one_token_request(
    setup, server: LocalOAuthServer
) -> None:  # type: ignore[no-untyped-def]
    import json
    import os

    sessions, _box, _keeper, cid, email, db_url, key, env = setup
    make_due(sessions, cid, utcnow())
    before = server.count("refresh_token", email=email)
    server.token_delay(1.0)  # the first refresh is still in flight when the second asks
    child_env = {
        **os.environ,
        "TEST_PROVIDER_ENV": json.dumps(env),
        "TEST_DB": db_url,
        "TEST_KEY": key,
        "TEST_CID": str(cid),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    finally:
        server.token_delay(0)
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0] == outs[1]  # the waiting process used the refresher's result
    assert server.count("refresh_token", email=email) == before + 1
    assert _grant(sessions, cid).version == 1


def test_a_refused_grant_turns_reauth_required_and_nothing_more_is_asked(
    setup, server: LocalOAuthServer
) -> None:  # type: ignore[no-untyped-def]
    sessions, _box, keeper, cid, email, *_ = setup
    server.revoke_grant(email)
    make_due(sessions, cid, utcnow())
    with pytest.raises(ReauthRequired):
        keeper.access_token(cid)
    status, last_error = _connection(sessions, cid)
    assert status == "reauth_required"
    assert last_error is not None and last_error.startswith("reauth_required: ")
    assert "Reconnect the mailbox" in last_error
    asked = server.count("refresh_token", email=email)
    for _ in range(3):
        with pytest.raises(ReauthRequired):
            keeper.access_token(cid)
    assert server.count("refresh_token", email=email) == asked


def test_an_app_refusal_names_the_admin_configuration(setup, server: LocalOAuthServer) -> None:  # type: ignore[no-untyped-def]
    sessions, _box, keeper, cid, _email, *_ = setup
    server.error_for_refresh(
        "unauthorized_client", "AADSTS700016: Application with identifier 'x' was not found"
    )
    make_due(sessions, cid, utcnow())
    with pytest.raises(ReauthRequired) as caught:
        keeper.access_token(cid)
    assert caught.value.admin
    _status, last_error = _connection(sessions, cid)
    assert last_error is not None
    assert "An admin must" in last_error and "AADSTS700016" in last_error
    assert "was not found" not in last_error  # our words, not the provider's


@pytest.mark.parametrize("body", ["json", "html", "empty"])
def test_provider_outages_change_no_status_until_they_last_15_minutes(
    setup, server: LocalOAuthServer, body: str
) -> None:  # type: ignore[no-untyped-def]
    sessions, _box, keeper, cid, email, *_ = setup
    with sessions() as s, s.begin():
        s.execute(sa.update(Connection).where(Connection.id == cid).values(status="active"))
    make_due(sessions, cid, utcnow())
    server.fail_token_requests(1, 503, body=body)  # type: ignore[arg-type]
    with pytest.raises(TokenUnavailable) as caught:
        keeper.access_token(cid)
    assert not caught.value.persisting
    assert _connection(sessions, cid) == ("active", None)
    assert _grant(sessions, cid).failing_since is not None
    # Still failing 16 minutes after the first failure: now it shows.
    later = TokenKeeper(
        keeper.sessions,
        keeper.box,
        keeper.providers,
        allowed=LOOPBACK,
        clock=lambda: utcnow() + timedelta(minutes=16),
    )
    server.fail_token_requests(1, 502, body=body)  # type: ignore[arg-type]
    with pytest.raises(TokenUnavailable) as caught:
        later.access_token(cid)
    assert caught.value.persisting
    status, last_error = _connection(sessions, cid)
    assert status == "error" and last_error is not None
    assert last_error.startswith("oauth_unavailable: ")
    # The provider is back: the refresh succeeds and the failure run is forgotten.
    keeper.access_token(cid)
    assert _grant(sessions, cid).failing_since is None
    assert server.count("refresh_token", email=email, outcome="ok") == 1


def test_a_token_endpoint_on_a_refused_network_is_never_dialled(
    setup, server: LocalOAuthServer
) -> None:  # type: ignore[no-untyped-def]
    sessions, box, keeper, cid, *_ = setup
    strict = TokenKeeper(sessions, box, keeper.providers, allowed=Networks())
    make_due(sessions, cid, utcnow())
    hits = server.hits("token")
    with pytest.raises(TokenUnavailable):
        strict.access_token(cid)
    assert server.hits("token") == hits


def test_a_reconnect_during_a_refused_refresh_is_not_undone(
    setup, server: LocalOAuthServer
) -> None:  # type: ignore[no-untyped-def]
    import threading

    from shared.services.oauth_connect import save_grant

    sessions, box, keeper, cid, email, _db, _key, env = setup
    provider = provider_from(env)
    server.next_consent(email)
    fresh = obtain_token(provider, REDIRECT)  # the owner's new sign-in, saved below
    make_due(sessions, cid, utcnow())
    server.error_for_refresh("invalid_grant", "AADSTS50173: password changed")
    server.token_delay(1.0)  # the refused refresh is in flight while the owner reconnects
    failure: list[BaseException] = []

    def refresh() -> None:
        try:
            keeper.access_token(cid)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=refresh)
    worker.start()
    try:
        deadline = utcnow() + timedelta(seconds=10)
        while _grant(sessions, cid).refreshing_by is None:  # the refresh holds the lease
            assert utcnow() < deadline
        with sessions() as s, s.begin():
            save_grant(s, box, cid, provider, fresh)
            s.execute(
                sa.update(Connection)
                .where(Connection.id == cid)
                .values(status="pending", last_error=None)
            )
    finally:
        worker.join(30)
        server.token_delay(0)
    assert failure and isinstance(failure[0], ReauthRequired)
    # The refusal was about the old grant: the reconnect stands.
    assert _connection(sessions, cid) == ("pending", None)
    asked = server.count("refresh_token", email=email)
    assert keeper.access_token(cid).value == fresh["access_token"]
    assert server.count("refresh_token", email=email) == asked

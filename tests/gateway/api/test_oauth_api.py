"""The OAuth connect API in process (§10), on both databases, against a local authorization
server: the bounds and refusals around the state — expiry, the per-user cap, a caller who
lost their rights, who may reconnect what — and a provider that is down at the callback."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from shared.db.base import utcnow
from shared.db.models import Connection, OAuthState
from shared.services.oauth_connect import MAX_PENDING_PER_USER
from tests.conftest import Api
from tests.support.oauth_flow import consent, provider_env, register_client
from tests.support.oauth_server import LocalOAuthServer

PUBLIC = "http://127.0.0.1:8025"  # the default INBOXLOG_PUBLIC_URL


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOAuthServer]:
    with LocalOAuthServer() as s:
        yield s


@pytest.fixture
def oauth_api(
    api: Api, server: LocalOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Api, str]:
    client_id, secret = register_client(server, PUBLIC + "/oauth/callback")
    for key, value in provider_env(server, client_id=client_id, client_secret=secret).items():
        monkeypatch.setenv(key, value)
    api.ctx.settings.allowed_private_networks = "127.0.0.0/8"  # the local server's network
    admin = api.new_account()["token"]
    return api, admin


def _account(api: Api, token: str) -> int:
    return int(api.call("GET", "/v1/account", token, 200)["id"])


def _connections(api: Api, token: str) -> int:
    """Connections of the caller's account (the database is shared with other tests)."""
    with api.ctx.sessions() as s:
        return int(
            s.scalar(
                sa.select(sa.func.count())
                .select_from(Connection)
                .where(Connection.account_id == _account(api, token))
            )
            or 0
        )


def _start(api: Api, token: str, expect: int = 200, **body: object) -> str:
    answer = api.call("POST", "/v1/connections/oauth", token, expect, json=body)
    return answer["authorize_url"] if expect == 200 else answer["error"]["code"]


def _callback(api: Api, url: str) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(url)
    resp = api.client.get(f"{parts.path}?{parts.query}")
    return resp.status_code, resp.text


def test_the_callback_page_is_plain_uncached_and_names_what_was_connected(
    oauth_api: tuple[Api, str], server: LocalOAuthServer
) -> None:
    api, admin = oauth_api
    server.next_consent("me@ours.example")
    url = _start(api, admin, provider="local", kind="personal")
    parts = urllib.parse.urlsplit(consent(url))
    resp = api.client.get(f"{parts.path}?{parts.query}")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["content-security-policy"] == "default-src 'none'"
    assert "me@ours.example is connected with local" in resp.text
    assert "<script" not in resp.text


def test_an_expired_state_is_refused_before_the_code_is_tried(
    oauth_api: tuple[Api, str], server: LocalOAuthServer
) -> None:
    api, admin = oauth_api
    url = _start(api, admin, provider="local", kind="personal")
    with api.ctx.sessions() as s, s.begin():
        s.execute(
            sa.update(OAuthState)
            .where(OAuthState.account_id == _account(api, admin))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    server.next_consent("late@ours.example")
    codes = server.count("authorization_code")
    status, page = _callback(api, consent(url))
    assert status == 400 and "oauth_state_invalid" in page
    assert server.count("authorization_code") == codes


def test_pending_authorizations_per_user_are_bounded(
    oauth_api: tuple[Api, str], server: LocalOAuthServer
) -> None:
    api, admin = oauth_api
    urls = [_start(api, admin, provider="local", kind="personal") for _ in range(25)]
    with api.ctx.sessions() as s:
        pending = s.scalar(
            sa.select(sa.func.count())
            .select_from(OAuthState)
            .where(OAuthState.account_id == _account(api, admin))
        )
    assert pending == MAX_PENDING_PER_USER
    server.next_consent("first@ours.example")
    status, page = _callback(api, consent(urls[0]))  # among the dropped
    assert status == 400 and "oauth_state_invalid" in page
    server.next_consent("last@ours.example")
    assert _callback(api, consent(urls[-1]))[0] == 200


def test_a_caller_who_lost_their_rights_connects_nothing(
    oauth_api: tuple[Api, str], server: LocalOAuthServer
) -> None:
    api, admin = oauth_api
    member = api.new_user(admin, "m@ours.example")
    url = _start(api, member["token"], provider="local", kind="personal")
    api.call("PATCH", f"/v1/users/{member['user']['id']}", admin, 200, json={"active": False})
    server.next_consent("m-box@ours.example")
    status, page = _callback(api, consent(url))
    assert status == 403 and "caller_inactive" in page
    assert _connections(api, admin) == 0


def test_only_who_may_change_a_connection_may_reconnect_it(
    oauth_api: tuple[Api, str], server: LocalOAuthServer
) -> None:
    api, admin = oauth_api
    owner = api.new_user(admin, "o@ours.example")
    other = api.new_user(admin, "x@ours.example")
    server.next_consent("o-box@ours.example")
    url = _start(api, owner["token"], provider="local", kind="personal")
    assert _callback(api, consent(url))[0] == 200
    with api.ctx.sessions() as s:
        cid = s.scalars(
            sa.select(Connection.id).where(Connection.account_id == _account(api, admin))
        ).one()
    assert _start(api, other["token"], 404, provider="local", connection_id=cid) == "not_found"
    assert _start(api, admin, 403, provider="local", connection_id=cid) == "not_owner"  # C4
    assert _start(api, owner["token"], provider="local", connection_id=cid).startswith(
        server.authorize_url
    )


def test_a_provider_down_at_the_callback_connects_nothing_and_says_so(
    oauth_api: tuple[Api, str], server: LocalOAuthServer
) -> None:
    api, admin = oauth_api
    url = _start(api, admin, provider="local", kind="personal")
    server.next_consent("down@ours.example")
    back = consent(url)
    server.fail_token_requests(1, 503, body="html")
    status, page = _callback(api, back)
    assert (
        status == 502 and "oauth_provider_unavailable" in page and "Nothing was connected" in page
    )
    assert _connections(api, admin) == 0


def test_short_lived_tokens_connect_and_an_expired_one_is_refused_in_words(
    oauth_api: tuple[Api, str], server: LocalOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token good for 30 s is good: it is used at once (Authlib's client would refuse any
    token within 60 s of expiry). One already expired on arrival connects nothing — a 400
    page that says so, not a 500."""
    api, admin = oauth_api
    monkeypatch.setattr(server, "access_token_ttl", 30)
    server.next_consent("brief@ours.example")
    status, page = _callback(api, consent(_start(api, admin, provider="local", kind="personal")))
    assert status == 200 and "brief@ours.example is connected" in page
    monkeypatch.setattr(server, "access_token_ttl", -1)
    server.next_consent("stale@ours.example")
    status, page = _callback(api, consent(_start(api, admin, provider="local", kind="personal")))
    assert status == 400 and "oauth_identity_unavailable" in page, page
    assert "Nothing was connected" in page
    assert _connections(api, admin) == 1

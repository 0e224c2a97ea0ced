"""OAuth connections end to end (§10): the API process, a poller and a worker on PostgreSQL and
Redis; a local OAuth 2 / OpenID server (tests/support/oauth_server.py) with 40-second access
tokens and refresh-token rotation; a private Dovecot whose oauth2 passdb checks every XOAUTH2
login against that server's introspection endpoint — so a lost, stale or revoked token fails
for real.

The first connection made here (the team inbox ``flow``) lives through the whole module: the
last test checks that its mail kept flowing through several refreshes, each rotated refresh
token saved (a lost one would fail the next refresh with ``invalid_grant``).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.db.base import utcnow
from shared.db.models import Connection, Conversation, LoggedEmail, OAuthGrant
from tests.e2e.mail import message
from tests.support.databases import fresh_postgres
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.oauth_flow import callback, consent, make_due, provider_env, register_client
from tests.support.oauth_server import LocalOAuthServer
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for

TTL = 40  # seconds an access token lives: refreshed at half its life (§10)
STARTUP = 120.0
SETTLE = 60.0
_seq = itertools.count(1)


@dataclass
class Env:
    stack: Stack
    server: LocalOAuthServer
    dovecot: DovecotServer
    base: str
    admin: str
    answers: list[str] = field(default_factory=list)  # every API answer body, for the scan
    flow: dict[str, Any] = field(default_factory=dict)

    def call(self, method: str, path: str, token: str, expect: int, **kw: Any) -> Any:
        resp = httpx.request(
            method,
            self.base + path,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            **kw,
        )
        self.answers.append(resp.text)
        assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def user(self, role: str = "member") -> tuple[int, str, str]:
        email = f"user{next(_seq)}@ours.example"
        body = self.call("POST", "/v1/users", self.admin, 201, json={"email": email, "role": role})
        return body["user"]["id"], email, body["token"]

    def mailbox(self, local: str) -> str:
        email = f"{local}{next(_seq)}@ours.example"
        self.dovecot.add_user(email, "harness-only-password")
        return email

    def start(self, token: str, expect: int = 200, **body: Any) -> str:
        answer = self.call("POST", "/v1/connections/oauth", token, expect, json=body)
        return answer["authorize_url"] if expect == 200 else answer

    def connect(self, token: str, email: str | None, **body: Any) -> httpx.Response:
        """Start, consent in the browser as ``email`` (None: deny), land on the callback."""
        verified = body.pop("_verified", True)
        url = self.start(token, **body)
        if email is None:
            self.server.next_consent(deny=True)
        else:
            self.server.next_consent(email, email_verified=verified)
        page = callback(consent(url))
        self.answers.append(page.text)
        return page

    def connection(self, cid: int, token: str | None = None) -> dict[str, Any]:
        return self.call("GET", f"/v1/connections/{cid}", token or self.admin, 200)

    def wait_status(
        self, cid: int, status: str, timeout: float = SETTLE, token: str | None = None
    ) -> dict[str, Any]:
        return wait_for(
            lambda: (c := self.connection(cid, token))["status"] == status and c,
            timeout,
            lambda: f"{self.connection(cid)}\n{self.stack.log('poller')[-3000:]}",
        )

    def logged(self, message_id: str) -> bool:
        with self.stack.sessions() as s:
            return (
                s.scalar(
                    sa.select(sa.func.count())
                    .select_from(LoggedEmail)
                    .where(LoggedEmail.message_id == message_id)
                )
                == 1
            )

    def deliver(self, mailbox: str, to: str, n: int) -> str:
        mid = f"<flow-{n}-{next(_seq)}@customer.example>"
        raw = message("carol@customer.example", [to], subject=f"Order {n}", message_id=mid)
        self.dovecot.append(mailbox, "INBOX", raw)
        return mid.strip("<>")


def _connection_id(page: httpx.Response) -> int:
    m = re.search(r"\(connection (\d+)\)", page.text)
    assert m, page.text
    return int(m.group(1))


def _error_code(page: httpx.Response) -> str | None:
    m = re.search(r"<code>([a-z_]+)</code>", page.text)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-oauth"))
    with LocalOAuthServer(access_token_ttl=TTL) as server, fresh_postgres() as db_url:
        dovecot = make(oauth_introspection_url=server.introspection_url)
        stack = make_stack(
            tmp_path_factory.mktemp("oauthstack"),
            db_url,
            redis_broker_url(),
            INBOXLOG_POLL_SECONDS="2",
            INBOXLOG_POLLER_LEASE_SECONDS="5",
        )
        base = f"http://127.0.0.1:{stack.env['INBOXLOG_HTTP_PORT']}"
        client_id, secret = register_client(server, base + "/oauth/callback")
        stack.env["INBOXLOG_PUBLIC_URL"] = base
        stack.env.update(
            provider_env(server, client_id=client_id, client_secret=secret, imap_port=dovecot.port)
        )
        # The Microsoft preset, pointed at the local server the way an operator would override
        # it: its address comes from the ID token (no userinfo), checked against the JWKS.
        stack.env.update(
            provider_env(
                server,
                name="MICROSOFT",
                client_id=client_id,
                client_secret=secret,
                imap_port=dovecot.port,
                id_token=True,
            )
        )
        del stack.env["INBOXLOG_OAUTH_MICROSOFT_SCOPES"]  # the preset's Outlook scopes
        stack.env.update(  # a provider whose mail server is configured for OAUTHBEARER
            provider_env(
                server,
                name="BEARER",
                client_id=client_id,
                client_secret=secret,
                imap_port=dovecot.port,
                SASL="oauthbearer",
            )
        )
        try:
            stack.start_api(STARTUP)
            stack.start_worker()
            stack.start("poller", "poller")
            yield Env(stack, server, dovecot, base, stack.new_account())
        finally:
            stack.close()
            stack.sessions.kw["bind"].dispose()
            cleanup()


def test_the_configured_providers_are_listed(env: Env) -> None:
    items = env.call("GET", "/v1/oauth/providers", env.admin, 200)["items"]
    assert {p["name"]: p["imap_host"] for p in items} == {
        "bearer": "127.0.0.1",
        "local": "127.0.0.1",
        "microsoft": "127.0.0.1",
    }


def test_a_team_inbox_connects_through_the_callback_and_its_mail_becomes_conversations(
    env: Env,
) -> None:
    inbox = env.call("POST", "/v1/inboxes", env.admin, 201, json={"name": "Flow", "member_ids": []})
    address = env.mailbox("flow")
    url = env.start(env.admin, provider="local", kind="team", inbox_id=inbox["id"])
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert query["redirect_uri"] == [env.base + "/oauth/callback"]
    env.server.next_consent(address)
    page = callback(consent(url))
    env.answers.append(page.text)
    assert page.status_code == 200, page.text
    assert f"The team inbox {address} is connected with local" in page.text
    cid = _connection_id(page)
    conn = env.wait_status(cid, "active", STARTUP)
    assert conn["address"] == address and conn["kind"] == "team"
    assert conn["imap"]["auth"] == "oauth" and conn["imap"]["username"] == address
    assert conn["oauth"]["provider"] == "local" and conn["oauth"]["expires_at"]
    env.flow.update(cid=cid, address=address, inbox_id=inbox["id"], started=time.monotonic())

    mid = env.deliver(address, address, 0)
    wait_for(lambda: env.logged(mid), SETTLE, lambda: env.stack.log("worker")[-3000:])
    with env.stack.sessions() as s:
        conversations = s.scalar(
            sa.select(sa.func.count())
            .select_from(Conversation)
            .where(Conversation.inbox_id == inbox["id"])
        )
    assert conversations == 1


def test_a_personal_login_proves_the_address_and_nobody_else_connects_it(env: Env) -> None:
    _, _, alice = env.user()
    _, _, bob = env.user()
    address = env.mailbox("alice")
    page = env.connect(alice, address, provider="local", kind="personal")
    assert page.status_code == 200, page.text
    cid = _connection_id(page)
    conn = env.connection(cid, alice)
    assert conn["status"] != "unverified"  # C7: the provider vouched for the address
    with env.stack.sessions() as s:
        assert s.get(Connection, cid).verified_at is not None  # type: ignore[union-attr]
    env.wait_status(cid, "active", STARTUP)
    managed = env.call(
        "PATCH", f"/v1/connections/{cid}", alice, 422, json={"imap": {"password": "x"}}
    )
    assert managed["error"]["code"] == "oauth_managed"

    before = env.server.count("authorization_code")
    page = env.connect(bob, address, provider="local", kind="personal")  # C1
    assert page.status_code == 409 and _error_code(page) == "address_already_connected"
    assert "already connected" in page.text
    assert env.server.count("authorization_code") == before + 1
    with env.stack.sessions() as s:
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(Connection)
                .where(Connection.address == address)
            )
            == 1
        )


def test_a_replayed_callback_changes_nothing(env: Env) -> None:
    _, _, carol = env.user()
    address = env.mailbox("carol")
    url = env.start(carol, provider="local", kind="personal")
    env.server.next_consent(address)
    back = consent(url)
    assert callback(back).status_code == 200
    codes = env.server.count("authorization_code")
    with env.stack.sessions() as s:
        count = s.scalar(sa.select(sa.func.count()).select_from(Connection))
    again = callback(back)
    env.answers.append(again.text)
    assert again.status_code == 400 and _error_code(again) == "oauth_state_invalid"
    assert env.server.count("authorization_code") == codes  # the code was not even tried
    with env.stack.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Connection)) == count
    # A made-up or missing state is the same refusal.
    assert callback(f"{env.base}/oauth/callback?state=made-up&code=x").status_code == 400
    assert callback(f"{env.base}/oauth/callback").status_code == 400


def test_refused_consent_unverified_addresses_and_members_asking_for_team_inboxes(
    env: Env,
) -> None:
    _, _, dave = env.user()
    page = env.connect(dave, None, provider="local", kind="personal")
    assert page.status_code == 400 and _error_code(page) == "oauth_consent_refused"
    page = env.connect(
        dave, env.mailbox("dave"), provider="local", kind="personal", _verified=False
    )
    assert page.status_code == 400 and _error_code(page) == "oauth_address_unverified"
    inbox = env.call("POST", "/v1/inboxes", env.admin, 201, json={"name": "X", "member_ids": []})
    refused = env.start(dave, 403, provider="local", kind="team", inbox_id=inbox["id"])
    assert refused["error"]["code"] == "admin_required"
    unknown = env.start(dave, 422, provider="nosuch", kind="personal")
    assert unknown["error"]["code"] == "unknown_provider"


def test_the_microsoft_preset_takes_the_address_from_the_signed_id_token(env: Env) -> None:
    _, _, erin = env.user()
    address = env.mailbox("erin")
    url = env.start(erin, provider="microsoft", kind="personal")
    assert "IMAP.AccessAsUser.All" in urllib.parse.unquote(url)
    env.server.next_consent(address, email_verified=None)  # Microsoft sends no such claim
    page = callback(consent(url))
    env.answers.append(page.text)
    assert page.status_code == 200, page.text
    conn = env.wait_status(_connection_id(page), "active", STARTUP, erin)
    assert conn["address"] == address and conn["oauth"]["provider"] == "microsoft"


def test_a_provider_configured_for_oauthbearer_signs_in_with_it(env: Env) -> None:
    _, _, gina = env.user()
    address = env.mailbox("gina")
    page = env.connect(gina, address, provider="bearer", kind="personal")
    assert page.status_code == 200, page.text
    env.wait_status(_connection_id(page), "active", STARTUP, gina)
    log = env.dovecot.log_path.read_text(errors="replace")
    assert f"user=<{address}>, method=OAUTHBEARER" in log
    assert f"user=<{address}>, method=XOAUTH2" not in log


def test_a_token_the_mail_server_refuses_is_refreshed_once_not_given_up(env: Env) -> None:
    _, _, hana = env.user()
    address = env.mailbox("hana")
    cid = _connection_id(env.connect(hana, address, provider="local", kind="personal"))
    env.wait_status(cid, "active", STARTUP, hana)
    before = env.server.count("refresh_token", email=address, outcome="ok")
    # The provider expires the token early (to us it has minutes left, as with a clock that
    # runs behind the provider's); a settings change makes the session sign in again.
    assert env.server.expire_access_tokens(address) >= 1
    env.call("PATCH", f"/v1/connections/{cid}", hana, 200, json={"imap": {"folders": ["INBOX"]}})
    wait_for(
        lambda: env.server.count("refresh_token", email=address, outcome="ok") == before + 1,
        SETTLE,
        lambda: env.stack.log("poller")[-3000:],
    )
    env.wait_status(cid, "active", SETTLE, hana)
    logins = env.dovecot.log_path.read_text(errors="replace")
    assert logins.count(f"user=<{address}>, method=XOAUTH2") >= 2


def test_a_revoked_grant_stops_everything_until_a_reconnect_with_the_same_mailbox(
    env: Env,
) -> None:
    _, _, frank = env.user()
    address, other = env.mailbox("frank"), env.mailbox("notfrank")
    cid = _connection_id(env.connect(frank, address, provider="local", kind="personal"))
    env.wait_status(cid, "active", STARTUP)

    env.server.revoke_grant(address)
    make_due(env.stack.sessions, cid, utcnow())
    # A settings change makes the session sign in again: with a refresh that is refused.
    env.call("PATCH", f"/v1/connections/{cid}", frank, 200, json={"imap": {"folders": ["INBOX"]}})
    conn = env.wait_status(cid, "reauth_required", token=frank)
    assert conn["last_error"].startswith("reauth_required: ")
    assert "Reconnect the mailbox" in conn["last_error"]
    asked = env.server.count("refresh_token", email=address)
    # Listed for people to act on: the ops API, `inboxlog status`, /metrics.
    ops = env.call("GET", "/v1/ops/status", "stack-operator-token", 200)
    assert {"id": cid, "status": "reauth_required"}.items() <= next(
        c for c in ops["connections"] if c["id"] == cid
    ).items()
    status = subprocess.run(
        [sys.executable, "-m", "inboxlog", "status"],
        env=env.stack.env,
        cwd=env.stack.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"connection {cid} ({address}) is reauth_required: reconnect it" in status.stdout
    metrics = httpx.get(
        env.base + "/metrics", headers={"Authorization": "Bearer stack-operator-token"}
    ).text
    assert re.search(
        rf'inboxlog_connection_needs_person\{{[^}}]*connection_id="{cid}"[^}}]*\}} 1', metrics
    )
    # No further attempt: several poller scans later, still not one more token request.
    scans = env.stack.log("poller").count("\n")
    time.sleep(6)  # three scan intervals: an absence can only be shown by waiting
    assert env.server.count("refresh_token", email=address) == asked, scans

    with env.stack.sessions() as s:
        version = s.get(OAuthGrant, cid).version  # type: ignore[union-attr]
    page = env.connect(frank, other, provider="local", connection_id=cid)
    assert page.status_code == 409 and _error_code(page) == "oauth_address_mismatch"
    with env.stack.sessions() as s:
        assert s.get(OAuthGrant, cid).version == version  # type: ignore[union-attr]
    assert env.connection(cid, frank)["status"] == "reauth_required"

    page = env.connect(frank, address, provider="local", connection_id=cid)
    assert page.status_code == 200 and "is reconnected" in page.text
    conn = env.wait_status(cid, "active", STARTUP, frank)
    assert conn["last_error"] is None


def test_mail_keeps_flowing_through_several_refreshes(env: Env) -> None:
    flow = env.flow
    assert flow, "runs after the team inbox test, whose connection it follows"
    address, cid = flow["address"], flow["cid"]
    delivered: list[str] = []
    seen = 0
    deadline = flow["started"] + 4 * TTL
    while env.server.count("refresh_token", email=address, outcome="ok") < 3:
        assert time.monotonic() < deadline, env.stack.log("poller")[-3000:]
        refreshes = env.server.count("refresh_token", email=address, outcome="ok")
        if refreshes > seen or not delivered:  # mail after every refresh
            seen = refreshes
            delivered.append(env.deliver(address, address, len(delivered) + 1))
        time.sleep(1)
    delivered.append(env.deliver(address, address, len(delivered) + 1))
    wait_for(
        lambda: all(env.logged(m) for m in delivered),
        SETTLE,
        lambda: env.stack.log("poller")[-3000:],
    )
    assert env.server.count("refresh_token", email=address, outcome="invalid_grant") == 0
    with env.stack.sessions() as s:
        grant = s.get(OAuthGrant, cid)
        assert grant is not None and grant.refreshes >= 3
    # The session signed in again with each new token, before it was due (Dovecot checks
    # the token at every login), and the connection never left ``active``.
    logins = env.dovecot.log_path.read_text(errors="replace").count(
        f"user=<{address}>, method=XOAUTH2"
    )
    assert logins >= 4, logins
    assert env.connection(cid)["status"] == "active"


def test_nothing_secret_in_any_answer_page_or_log(env: Env) -> None:
    secrets_ = env.server.all_secrets()
    assert len(secrets_) > 10
    texts = env.answers + [env.stack.log(name) for name in ("api", "poller", "worker")]
    leaks = [s for s in secrets_ if any(s in t for t in texts)]
    assert leaks == []

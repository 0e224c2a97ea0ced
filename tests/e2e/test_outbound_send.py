"""Sending through inboxlog end to end (§9): the API process and a Celery worker on PostgreSQL
and Redis, delivering over STARTTLS with a password to a scriptable upstream SMTP server
(tests/support/upstream_smtp.py) — copies per tracked recipient, the internal copy untracked,
no Bcc header on the wire, logging at ``sent``, temporary refusals retried, permanent ones
failed with the server's reply."""

from __future__ import annotations

import email
import email.policy
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.db.base import utcnow
from shared.db.models import Decision, OutboxCopy, TrackingEvent
from tests.support.databases import fresh_postgres
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for
from tests.support.upstream_smtp import UpstreamSmtp

STARTUP = 120.0
SETTLE = 60.0
_seq = itertools.count(1)
PASSWORD = "smtp-secret-password"


@dataclass
class Env:
    stack: Stack
    upstream: UpstreamSmtp
    base: str
    admin: str
    answers: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, token: str, expect: int, **kw: Any) -> Any:
        resp = httpx.request(
            method, self.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=30,
            **kw,
        )  # fmt: skip
        self.answers.append(resp.text)
        assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def sender(self) -> tuple[str, str]:
        """A user whose primary address is connected with SMTP settings: (address, token)."""
        email_ = f"rep{next(_seq)}@ours.example"
        body = self.call("POST", "/v1/users", self.admin, 201, json={"email": email_})
        self.upstream.passwords[email_] = PASSWORD
        self.call(
            "POST", "/v1/connections", body["token"], 201,
            json={"address": email_, "kind": "personal", "smtp": {
                "host": "localhost", "port": self.upstream.port, "security": "starttls",
                "username": email_, "password": PASSWORD}},
        )  # fmt: skip
        return email_, body["token"]

    def outbox(self, token: str, outbox_id: int, status: str) -> dict[str, Any]:
        return wait_for(
            lambda: (
                (o := self.call("GET", f"/v1/outbox/{outbox_id}", token, 200))["status"] == status
                and o
            ),
            SETTLE,
            lambda: (
                str(self.call("GET", f"/v1/outbox/{outbox_id}", token, 200))
                + self.stack.log("worker")[-3000:]
            ),
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with UpstreamSmtp(tls="starttls", passwords={}, require_auth=True) as upstream:
        with fresh_postgres() as db_url:
            stack = make_stack(
                tmp_path_factory.mktemp("outbound"),
                db_url,
                redis_broker_url(),
                INBOXLOG_IMAP_CA_FILE=str(upstream.ca_file),
                INBOXLOG_OUTBOUND_FIRST_RETRY_SECONDS="1",
            )
            base = f"http://127.0.0.1:{stack.env['INBOXLOG_HTTP_PORT']}"
            stack.env["INBOXLOG_PUBLIC_URL"] = base
            try:
                stack.start_api(STARTUP)
                stack.start_worker()
                stack.start_gateway()
                admin = stack.new_account()
                httpx.patch(
                    base + "/v1/account/settings",
                    headers={"Authorization": f"Bearer {admin}"},
                    json={"internal_domains": ["ours.example"]},
                    timeout=30,
                ).raise_for_status()
                yield Env(stack, upstream, base, admin)
            finally:
                stack.close()
                stack.sessions.kw["bind"].dispose()
        assert upstream.errors == []


def _parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def _html(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(("html",))
    return "" if part is None else part.get_content()  # type: ignore[no-any-return]


def test_a_tracked_send_makes_a_copy_per_external_recipient_and_is_logged_once_sent(
    env: Env,
) -> None:
    sender, token = env.sender()
    before = len(env.upstream.deliveries)
    html = (
        '<p>Hi <a href="https://shop.example/order?id=1&amp;x=2">order</a> '
        '<a href="mailto:a@b.example">mail</a></p>'
    )
    answer = env.call(
        "POST", "/v1/emails/send", token, 202,
        json={"from": sender, "to": ["Bob <bob@customer.example>"],
              "cc": ["colleague@ours.example"], "bcc": ["carol@customer.example"],
              "subject": "Your order", "text": "See https://shop.example/order?id=1",
              "html": html, "track": True},
    )  # fmt: skip
    assert answer["status"] == "queued" and answer["message_id"].endswith("@ours.example")
    sent = env.outbox(token, answer["outbox_id"], "sent")
    assert sent["attempts"] == 1 and sent["sent_at"]
    got = env.upstream.deliveries[before:]
    by_rcpt = {d.rcpt_tos: d for d in got}
    assert set(by_rcpt) == {
        ("bob@customer.example",),
        ("carol@customer.example",),
        ("colleague@ours.example",),
    }
    ids = set()
    pixels = set()
    for rcpts, delivery in by_rcpt.items():
        assert delivery.tls and delivery.auth is not None and delivery.auth.user == sender
        msg = _parse(delivery.data)
        assert msg["Bcc"] is None  # no copy shows Bcc
        assert msg["To"] == "Bob <bob@customer.example>" and msg["Subject"] == "Your order"
        ids.add(msg["Message-ID"])
        body = _html(msg)
        assert "mailto:a@b.example" in body  # never rewritten
        if rcpts == ("colleague@ours.example",):  # internal: untracked
            assert "https://shop.example/order?id=1&amp;x=2" in body and "/t/o/" not in body
        else:
            assert "shop.example" not in body
            found = re.findall(r"/t/o/([A-Za-z0-9_-]+)", body)
            assert len(found) == 1
            pixels.add(found[0])
            assert re.search(r"/t/c/[A-Za-z0-9_-]+", body)
        text = msg.get_body(("plain",))
        assert text is not None and "https://shop.example/order?id=1" in text.get_content()
    assert ids == {f"<{answer['message_id']}>"} and len(pixels) == 2
    # Logged at sent, as the sender's outgoing mail, with the Bcc recipient as a participant.
    logged = env.outbox(token, answer["outbox_id"], "sent")
    wait_for(
        lambda: env.call("GET", f"/v1/outbox/{answer['outbox_id']}", token, 200)["email_id"],
        SETTLE,
        lambda: env.stack.log("worker")[-3000:],
    )
    email_id = env.call("GET", f"/v1/outbox/{answer['outbox_id']}", token, 200)["email_id"]
    shown = env.call("GET", f"/v1/emails/{email_id}", token, 200)
    assert shown["direction"] == "outgoing" and shown["message_id"] == answer["message_id"]
    assert "sent" in shown["sources"]
    with env.stack.sessions() as s:
        decision = s.scalars(sa.select(Decision).where(Decision.email_id == email_id)).one()
    assert decision.source == "sent"
    assert {p["address"] for p in decision.participants} >= {
        "bob@customer.example",
        "carol@customer.example",
    }
    assert logged["last_error"] is None


def test_temporary_refusals_are_retried_and_each_recipient_gets_one_delivery(env: Env) -> None:
    sender, token = env.sender()
    env.upstream.script(data=["451 4.3.0 Temporary local problem - please try later"] * 2)
    before = len(env.upstream.deliveries)
    answer = env.call(
        "POST", "/v1/emails/send", token, 202,
        json={"from": sender, "to": ["dan@customer.example"], "subject": "Retry", "text": "hello"},
    )  # fmt: skip
    done = env.outbox(token, answer["outbox_id"], "sent")
    assert done["attempts"] == 3
    assert [d.rcpt_tos for d in env.upstream.deliveries[before:]] == [("dan@customer.example",)]


def test_a_permanent_refusal_fails_with_the_servers_reply(env: Env) -> None:
    sender, token = env.sender()
    env.upstream.script(rcpt=["550 5.1.1 The email account that you tried to reach is gone"])
    answer = env.call(
        "POST", "/v1/emails/send", token, 202,
        json={"from": sender, "to": ["nobody@customer.example"], "subject": "X", "text": "x"},
    )  # fmt: skip
    failed = env.outbox(token, answer["outbox_id"], "failed")
    assert failed["last_error"].startswith("550 5.1.1 The email account that you tried to reach")
    assert failed["email_id"] is None
    with env.stack.sessions() as s:
        copies = s.scalars(
            sa.select(OutboxCopy).where(OutboxCopy.outbox_id == answer["outbox_id"])
        ).all()
    assert [c.status for c in copies] == ["refused"]


def test_only_addresses_the_user_may_send_from_are_accepted(env: Env) -> None:
    _sender, token = env.sender()
    other, _ = env.sender()
    refused = env.call(
        "POST", "/v1/emails/send", token, 403,
        json={"from": other, "to": ["x@customer.example"], "subject": "X", "text": "x"},
    )  # fmt: skip
    assert refused["error"]["code"] == "sender_not_allowed"


CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
APPLE_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)


def _tracked_send(env: Env, token: str, sender: str, to: str, **extra: Any) -> tuple[int, str]:
    before = len(env.upstream.deliveries)
    html = '<p><a href="https://shop.example/a">a</a> <a href="https://shop.example/b">b</a></p>'
    answer = env.call(
        "POST", "/v1/emails/send", token, 202,
        json={"from": sender, "to": [to], "subject": "Offer", "text": "offer", "html": html,
              **extra},
    )  # fmt: skip
    env.outbox(token, answer["outbox_id"], "sent")
    wait_for(
        lambda: (
            env.call("GET", f"/v1/outbox/{answer['outbox_id']}", token, 200)["email_id"]
            or not extra.get("log", True)
        ),
        SETTLE,
        lambda: env.stack.log("worker")[-3000:],
    )
    (delivery,) = env.upstream.deliveries[before:]
    return answer["outbox_id"], _html(_parse(delivery.data))


def _age_copies(env: Env, outbox_id: int, seconds: int) -> None:
    """As if the upstream accepted the copies, and the events so far came, ``seconds`` ago
    (no sleeping in tests)."""
    ago = utcnow() - timedelta(seconds=seconds)
    with env.stack.sessions() as s, s.begin():
        s.execute(
            sa.update(OutboxCopy).where(OutboxCopy.outbox_id == outbox_id).values(accepted_at=ago)
        )
        s.execute(
            sa.update(TrackingEvent).where(TrackingEvent.outbox_id == outbox_id).values(at=ago)
        )


def test_opens_and_clicks_are_recorded_per_recipient_and_machines_told_apart(env: Env) -> None:
    sender, token = env.sender()
    outbox_id, html = _tracked_send(env, token, sender, "erin@customer.example", track=True)
    pixel = re.search(r'src="([^"]*/t/o/[^"]+)"', html)
    clicks = re.findall(r'href="([^"]*/t/c/[^"]+)"', html)
    assert pixel and len(clicks) == 2
    scan = httpx.get(clicks[0], follow_redirects=False)  # seconds after delivery: a scanner
    assert scan.status_code == 302 and scan.headers["location"] == "https://shop.example/a"
    _age_copies(env, outbox_id, 600)
    opened = httpx.get(pixel.group(1), headers={"User-Agent": CHROME})
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    assert "no-store" in opened.headers["cache-control"]
    assert httpx.get(pixel.group(1), headers={"User-Agent": GMAIL_PROXY}).status_code == 200
    # Apple Mail's bare WebKit agent from Apple's network is its privacy proxy — but this
    # X-Forwarded-For comes from a peer that is no trusted proxy, so it names nobody.
    spoofed = {"User-Agent": APPLE_MAIL, "X-Forwarded-For": "17.58.0.1"}
    assert httpx.get(pixel.group(1), headers=spoofed).status_code == 200
    assert httpx.head(pixel.group(1)).status_code == 200
    human = httpx.get(clicks[1], headers={"User-Agent": CHROME}, follow_redirects=False)
    assert human.headers["location"] == "https://shop.example/b"
    # An altered token: 404, never a redirect.
    altered = clicks[1][:-2] + ("AA" if not clicks[1].endswith("AA") else "BB")
    bad = httpx.get(altered, follow_redirects=False)
    assert bad.status_code == 404 and "location" not in bad.headers
    assert httpx.get(pixel.group(1).replace("/t/o/", "/t/c/")).status_code == 404

    email_id = env.call("GET", f"/v1/outbox/{outbox_id}", token, 200)["email_id"]
    events = env.call("GET", f"/v1/emails/{email_id}/events", token, 200)["items"]
    reasons = [(e["type"], e["machine"], e["reason"]) for e in events]
    assert reasons == [
        ("click", True, "scanner"),
        ("open", False, None),
        ("open", True, "gmail_image_proxy"),
        ("open", False, None),
        ("open", True, "head_request"),
        ("click", False, None),
    ]
    assert all(e["recipient"] == "erin@customer.example" for e in events)
    # Paged by keyset (oldest first: the page after the last one's id) and by offset alike.
    path = f"/v1/emails/{email_id}/events?limit=4"
    first = env.call("GET", path, token, 200)["items"]
    rest = env.call("GET", f"{path}&before_id={first[-1]['id']}", token, 200)["items"]
    assert first + rest == events
    assert env.call("GET", f"{path}&offset=4", token, 200)["items"] == rest
    tracking = env.call("GET", f"/v1/emails/{email_id}", token, 200)["tracking"]
    assert tracking["opens"] == 4 and tracking["human_opens"] == 2
    assert tracking["clicks"] == 2 and tracking["human_clicks"] == 1
    assert tracking["first_open_at"] is not None
    assert tracking["by_recipient"] == [
        {"address": "erin@customer.example", "opens": 2, "clicks": 1}
    ]


def test_track_off_opt_out_and_log_off(env: Env) -> None:
    sender, token = env.sender()
    _, html = _tracked_send(env, token, sender, "fay@customer.example", track=False)
    assert "/t/o/" not in html and "https://shop.example/a" in html
    # Opt-out: earlier mail's events stop being recorded, new mail is untracked.
    outbox_id, tracked = _tracked_send(env, token, sender, "gus@customer.example", track=True)
    pixel = re.search(r'src="([^"]*/t/o/[^"]+)"', tracked)
    assert pixel
    contact = env.call("GET", "/v1/contacts?email=gus@customer.example", token, 200)["items"][0]
    patched = env.call(
        "PATCH", f"/v1/contacts/{contact['id']}", token, 200, json={"tracking_opt_out": True}
    )
    assert patched["tracking_opt_out"] is True
    assert httpx.get(pixel.group(1), headers={"User-Agent": CHROME}).status_code == 200
    email_id = env.call("GET", f"/v1/outbox/{outbox_id}", token, 200)["email_id"]
    assert env.call("GET", f"/v1/emails/{email_id}/events", token, 200)["items"] == []
    _, again = _tracked_send(env, token, sender, "gus@customer.example", track=True)
    assert "/t/o/" not in again and "https://shop.example/a" in again
    # log off: delivered, never logged.
    quiet_id, _ = _tracked_send(env, token, sender, "hal@customer.example", log=False)
    assert env.call("GET", f"/v1/outbox/{quiet_id}", token, 200)["email_id"] is None


def test_a_team_reply_threads_into_its_conversation_as_the_inbox(env: Env) -> None:
    member = env.call("POST", "/v1/users", env.admin, 201, json={"email": "amy@ours.example"})
    token = member["token"]
    inbox = env.call(
        "POST", "/v1/inboxes", env.admin, 201,
        json={"name": "Support", "sender_name": "Acme Support",
              "member_ids": [member["user"]["id"]]},
    )  # fmt: skip
    team = "support@ours.example"
    env.upstream.passwords[team] = PASSWORD
    env.call(
        "POST", "/v1/connections", env.admin, 201,
        json={"address": team, "kind": "team", "inbox_id": inbox["id"], "smtp": {
            "host": "localhost", "port": env.upstream.port, "security": "starttls",
            "username": team, "password": PASSWORD}},
    )  # fmt: skip
    question = (
        b"From: Kim <kim@customer.example>\r\nTo: support@ours.example\r\n"
        b"Subject: RE: Re: Broken widget\r\nMessage-ID: <q1@customer.example>\r\n"
        b"Date: Tue, 01 Dec 2026 09:00:00 +0000\r\n"
        b"References: <q0@customer.example>\r\n\r\nIt is broken.\r\n"
    )
    env.stack.send(question, [inbox["forward_address"]], "kim@customer.example")
    conv_path = f"/v1/inboxes/{inbox['id']}/conversations"
    conv = wait_for(
        lambda: (items := env.call("GET", conv_path, token, 200)["items"]) and items[0],
        SETTLE,
        lambda: env.stack.log("worker")[-3000:],
    )
    before = len(env.upstream.deliveries)
    answer = env.call(
        "POST", f"/v1/conversations/{conv['id']}/reply", token, 202,
        json={"text": "We are on it."},
    )  # fmt: skip
    env.outbox(token, answer["outbox_id"], "sent")
    (delivery,) = env.upstream.deliveries[before:]
    msg = _parse(delivery.data)
    assert delivery.rcpt_tos == ("kim@customer.example",)
    assert msg["From"] == "Acme Support <support@ours.example>"
    assert msg["Subject"] == "Re: Broken widget"
    assert msg["In-Reply-To"] == "<q1@customer.example>"
    assert msg["References"] == "<q0@customer.example> <q1@customer.example>"
    shown = wait_for(
        lambda: (
            (c := env.call("GET", f"/v1/conversations/{conv['id']}", token, 200))["message_count"]
            == 2
            and c
        ),
        SETTLE,
        lambda: env.stack.log("worker")[-3000:],
    )
    last = shown["messages"][-1]
    email_id = env.call("GET", f"/v1/outbox/{answer['outbox_id']}", token, 200)["email_id"]
    assert last["id"] == email_id and last["direction"] == "outgoing"
    assert "sent" in env.call("GET", f"/v1/emails/{email_id}", token, 200)["sources"]


def test_no_password_in_any_answer_or_log(env: Env) -> None:
    texts = env.answers + [env.stack.log(n) for n in ("api", "worker")]
    assert not any(PASSWORD in t for t in texts)

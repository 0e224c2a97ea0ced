"""The Sent folder after sending (§9 save_sent) against a private Dovecot: ``auto`` APPENDs the
message (\\Seen) only when the provider did not file it, ``never`` leaves the mailbox alone,
and the copy the poller later reads from Sent is a ``duplicate`` of the email logged at
sending — never a second email.

The stack's scheduled check is set far out (an hour): each test runs the check itself
(worker/outbound/sent_folder.py), after arranging the mailbox, instead of racing a timer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.crypto import SecretBox
from shared.db.models import Decision, Outbox, StoredMessage
from shared.networks import Networks
from tests.support.databases import fresh_postgres
from tests.support.dovecot import DovecotServer, dovecot_server_factory, ensure_dovecot_installed
from tests.support.stack import Stack, make_stack, redis_broker_url, wait_for
from tests.support.upstream_smtp import UpstreamSmtp
from worker.imap.session import PollerConfig
from worker.outbound.deliver import DeliveryDeps
from worker.outbound.sent_folder import file_sent

STARTUP = 120.0
SETTLE = 60.0
_seq = itertools.count(1)


class Env:
    def __init__(
        self, stack: Stack, upstream: UpstreamSmtp, dovecot: DovecotServer, base: str, admin: str
    ) -> None:
        self.stack, self.upstream, self.dovecot, self.base, self.admin = (
            stack, upstream, dovecot, base, admin,
        )  # fmt: skip

    def call(self, method: str, path: str, token: str, expect: int, **kw: Any) -> Any:
        resp = httpx.request(
            method, self.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=30,
            **kw,
        )  # fmt: skip
        assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def mailbox_user(self, save_sent: str) -> tuple[str, str, int]:
        """A user whose primary address is connected with IMAP (Dovecot) and SMTP."""
        address = f"rep{next(_seq)}@ours.example"
        self.dovecot.add_user(address, "pw")
        self.upstream.passwords[address] = "pw"
        body = self.call("POST", "/v1/users", self.admin, 201, json={"email": address})
        conn = self.call(
            "POST", "/v1/connections", body["token"], 201,
            json={"address": address, "kind": "personal",
                  "imap": {"host": "127.0.0.1", "port": self.dovecot.port, "security": "none",
                           "username": address, "password": "pw"},
                  "smtp": {"host": "localhost", "port": self.upstream.port,
                           "security": "none", "save_sent": save_sent}},
        )  # fmt: skip
        wait_for(
            lambda: (
                self.call("GET", f"/v1/connections/{conn['id']}", body["token"], 200)["status"]
                == "active"
            ),
            STARTUP,
            lambda: self.stack.log("poller")[-3000:],
        )
        return address, body["token"], conn["id"]

    def send(self, token: str, sender: str) -> dict[str, Any]:
        answer = self.call(
            "POST", "/v1/emails/send", token, 202,
            json={"from": sender, "to": ["kim@customer.example"], "subject": "Quote",
                  "text": "Here it is."},
        )  # fmt: skip
        wait_for(
            lambda: self.call("GET", f"/v1/outbox/{answer['outbox_id']}", token, 200)["email_id"],
            SETTLE,
            lambda: self.stack.log("worker")[-3000:],
        )
        return answer  # type: ignore[no-any-return]

    def file(self, outbox_id: int) -> str | None:
        deps = DeliveryDeps(
            sessions=self.stack.sessions,
            box=SecretBox(self.stack.env["INBOXLOG_SECRET_KEY"]),
            allowed=Networks.parse("127.0.0.0/8"),
        )
        return file_sent(outbox_id, deps, PollerConfig(allowed_networks=deps.allowed))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ensure_dovecot_installed()
    make, cleanup = dovecot_server_factory(tmp_path_factory.mktemp("dovecot-sent"))
    with UpstreamSmtp(tls="none") as upstream, fresh_postgres() as db_url:
        dovecot = make()
        stack = make_stack(
            tmp_path_factory.mktemp("sentfolder"),
            db_url,
            redis_broker_url(),
            INBOXLOG_POLL_SECONDS="2",
            INBOXLOG_OUTBOUND_SENT_CHECK_SECONDS="3600",
        )
        base = f"http://127.0.0.1:{stack.env['INBOXLOG_HTTP_PORT']}"
        try:
            stack.start_api(STARTUP)
            stack.start_worker()
            stack.start("poller", "poller")
            yield Env(stack, upstream, dovecot, base, stack.new_account())
        finally:
            stack.close()
            stack.sessions.kw["bind"].dispose()
            cleanup()


def _sent_folder(env: Env, user: str) -> dict[int, frozenset[str]]:
    return env.dovecot.flags_snapshot(user, "Sent")


def test_auto_appends_when_the_provider_did_not_file_it_and_the_imap_copy_is_a_duplicate(
    env: Env,
) -> None:
    address, token, _ = env.mailbox_user("auto")
    answer = env.send(token, address)
    assert _sent_folder(env, address) == {}
    assert env.file(answer["outbox_id"]) == "appended"
    flags = _sent_folder(env, address)
    assert len(flags) == 1 and "\\Seen" in next(iter(flags.values()))
    assert env.file(answer["outbox_id"]) is None  # once only
    # The poller reads it from Sent: the same Message-ID, a duplicate, not a second email.
    with env.stack.sessions() as s:
        sid = s.get(Outbox, answer["outbox_id"]).stored_message_id  # type: ignore[union-attr]

    def decisions() -> list[tuple[str, str]]:
        with env.stack.sessions() as s:
            return [
                (d.source, d.outcome)
                for d in s.scalars(
                    sa.select(Decision).where(Decision.message_id == answer["message_id"])
                )
            ]

    wait_for(lambda: len(decisions()) == 2, SETTLE, lambda: env.stack.log("poller")[-3000:])
    assert sorted(decisions()) == [("personal", "duplicate"), ("sent", "logged")]
    assert sid is not None


def test_auto_leaves_a_copy_the_provider_filed_and_never_touches_nothing(env: Env) -> None:
    address, token, _ = env.mailbox_user("auto")
    answer = env.send(token, address)
    (delivery,) = [d for d in env.upstream.deliveries if d.mail_from == address]
    env.dovecot.append(address, "Sent", delivery.data, flags=("\\Seen",))  # the provider's
    assert env.file(answer["outbox_id"]) == "found"
    assert len(_sent_folder(env, address)) == 1

    other, other_token, _ = env.mailbox_user("never")
    quiet = env.send(other_token, other)
    assert env.file(quiet["outbox_id"]) == "skipped"
    assert env.file(quiet["outbox_id"]) is None  # recorded: the sweeper will not ask again
    assert _sent_folder(env, other) == {}


def test_mail_sent_with_log_off_stays_unlogged_when_read_from_sent(env: Env) -> None:
    """``log: false`` at sending: nothing is logged then, and the mailbox's own copy in Sent,
    read later by IMAP, is not logged either (skipped, ``logging_off``, nothing kept)."""
    address, token, conn_id = env.mailbox_user("never")
    answer = env.call(
        "POST", "/v1/emails/send", token, 202,
        json={"from": address, "to": ["lou@customer.example"], "subject": "Private",
              "text": "Between us.", "log": False},
    )  # fmt: skip
    wait_for(
        lambda: (
            env.call("GET", f"/v1/outbox/{answer['outbox_id']}", token, 200)["status"] == "sent"
        ),
        SETTLE,
        lambda: env.stack.log("worker")[-3000:],
    )
    (delivery,) = [d for d in env.upstream.deliveries if d.mail_from == address]
    env.dovecot.append(address, "Sent", delivery.data, flags=("\\Seen",))  # the provider's
    # A control in the same folder, sent by other means: judged as usual.
    other = delivery.data.replace(
        answer["message_id"].encode(), b"other-" + answer["message_id"].encode()
    )
    env.dovecot.append(address, "Sent", other, flags=("\\Seen",))

    def decisions() -> list[tuple[str, list[str], str | None, str | None]]:
        with env.stack.sessions() as s:
            rows = s.execute(
                sa.select(Decision.outcome, Decision.codes, Decision.message_id, Decision.subject)
                .join(StoredMessage, StoredMessage.id == Decision.stored_message_id)
                .where(StoredMessage.connection_id == conn_id)
            )
            return sorted((o, list(c or []), m, subj) for o, c, m, subj in rows)

    wait_for(lambda: len(decisions()) == 2, SETTLE, lambda: env.stack.log("poller")[-3000:])
    ours, control = decisions()
    assert ours == ("skipped", ["logging_off"], None, None)  # nothing of it kept
    # The control is judged by the usual rules (no contact yet: skipped), and kept.
    assert control == ("skipped", ["no_contacts"], "other-" + answer["message_id"], "Private")
    assert env.call("GET", f"/v1/outbox/{answer['outbox_id']}", token, 200)["email_id"] is None

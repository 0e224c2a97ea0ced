"""The SMTP submission listener (§9): real SMTP sessions (smtplib, STARTTLS with a test CA) against
the listener running in-process on an ephemeral port, on both databases. The broker is not under
test: a stand-in records the delivery enqueue and what a separate session saw at that moment."""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import logging
import smtplib
import ssl
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gateway.smtp.app import serve
from gateway.smtp.submission import SubmissionServer, build_submission
from shared.config import ConfigError
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import ApiToken, Outbox, OutboxCopy, User
from shared.principal import Principal
from shared.services.accounts import issue_token
from tests.conftest import make_settings
from tests.support.dovecot import _write_tls_material
from tests.support.world import World, new_world

_seq = itertools.count(1)
SMTP_SETTINGS = {"host": "smtp.example", "port": 587, "security": "starttls", "password": "x"}
MAX_RECIPIENTS = 3


class RecordingQueue:
    """Stands in for TaskSender: records each enqueue and the outbox rows another session
    could see at that moment (a row enqueued before its commit would not be there)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.calls: list[list[int]] = []
        self.visible: list[list[str]] = []

    def deliver(self, outbox_ids: Iterable[int]) -> int:
        ids = list(outbox_ids)
        with self.sessions() as s:
            self.visible.append(list(s.scalars(sa.select(Outbox.status).where(Outbox.id.in_(ids)))))
        self.calls.append(ids)
        return len(ids)


class Listener:
    """The submission server on its own event loop in a background thread."""

    def __init__(self, server: SubmissionServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port: int = self.call(server.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.server.drain_and_stop(5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Env:
    world: World
    sessions: sessionmaker[Session]
    listener: Listener
    queue: RecordingQueue
    ca: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def sender(self) -> tuple[str, str]:
        """A user whose own address is connected with SMTP settings: (address, API token)."""
        address = f"rep{next(_seq)}@ours.example"
        uid = self.world.user(address)
        principal = Principal(
            kind="user", account_id=self.world.account_id, user_id=uid, role="member"
        )
        self.world.connect(address, kind="personal", principal=principal, smtp=SMTP_SETTINGS)
        return address, self.token(uid)

    def token(self, user_id: int) -> str:
        with transaction(self.sessions) as s:
            user = s.get(User, user_id)
            assert user is not None
            return issue_token(session=s, user=user)

    def smtp(self, *, tls: bool = True) -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", self.listener.port, timeout=10)
        s.ehlo("client.example")
        if tls:
            s.starttls(context=ssl.create_default_context(cafile=str(self.ca)))
            s.ehlo("client.example")
        return s

    def logged_in(self, address: str, token: str) -> smtplib.SMTP:
        s = self.smtp()
        assert s.login(address, token)[0] == 235
        return s

    def outboxes(self) -> list[Outbox]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    sa.select(Outbox)
                    .where(Outbox.account_id == self.world.account_id)
                    .order_by(Outbox.id)
                    .options(sa.orm.undefer(Outbox.raw))
                )
            )

    def copies(self, outbox_id: int) -> list[OutboxCopy]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    sa.select(OutboxCopy)
                    .where(OutboxCopy.outbox_id == outbox_id)
                    .options(sa.orm.undefer(OutboxCopy.raw))
                )
            )


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    ca, cert, key = _write_tls_material(tmp_path)
    settings = make_settings(
        db_url,
        tmp_path,
        smtp_tls_cert=str(cert),
        smtp_tls_key=str(key),
        smtp_max_recipients=MAX_RECIPIENTS,
        submission_port=0,
    )
    queue = RecordingQueue(sessions)
    listener = Listener(build_submission(settings, sessions, queue))
    try:
        yield Env(new_world(sessions), sessions, listener, queue, ca)
    finally:
        listener.close()
        engine.dispose()


def mail(
    sender: str,
    to: list[str],
    *,
    message_id: str | None = "<client-1@mua.example>",
    bcc: str | None = None,
    body: str = "Hello from the mail client.",
) -> bytes:
    lines = [f"From: Rep <{sender}>", f"To: {', '.join(to)}", "Subject: Quote"]
    if bcc:
        lines.append(f"Bcc: {bcc}")
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    lines += ["Date: Tue, 04 Mar 2025 10:00:00 +0000", "", body, ""]
    return "\r\n".join(lines).encode()


def code_of(reply: tuple[int, bytes]) -> tuple[int, bytes]:
    """(code, enhanced status code) of an smtplib reply."""
    return reply[0], reply[1][:5]


def test_auth_is_offered_and_taken_only_after_starttls(env: Env) -> None:
    address, token = env.sender()
    with env.smtp(tls=False) as s:
        assert "starttls" in s.esmtp_features
        assert "auth" not in s.esmtp_features
        assert s.docmd("AUTH", "PLAIN")[0] in (530, 538)
        assert code_of(s.mail(address)) == (530, b"5.7.0")
    with env.smtp() as s:
        assert set(s.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        assert "size" in s.esmtp_features
        code, _ = s.mail(address)  # TLS alone is not enough: MAIL waits for AUTH
        assert code == 530
        s.user, s.password = address.upper(), token  # the email is case-insensitive
        assert s.auth("LOGIN", s.auth_login)[0] == 235


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_wrong_token_is_535(env: Env, mechanism: str) -> None:
    address, token = env.sender()
    with env.smtp() as s:
        s.user, s.password = address, token + "x"
        auth = s.auth_plain if mechanism == "PLAIN" else s.auth_login
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            s.auth(mechanism, auth)
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (535, b"5.7.8")
        assert code_of(s.mail(address)) == (530, b"5.7.0")


def test_another_users_token_with_this_email_is_535(env: Env) -> None:
    address, _ = env.sender()
    _, other_token = env.sender()
    admin_token = env.token(env.world.admin_id)
    with env.smtp() as s:
        for token in (other_token, admin_token):
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                s.login(address, token)
            assert refused.value.smtp_code == 535


def test_inactive_users_token_is_535(env: Env) -> None:
    address, token = env.sender()
    with transaction(env.sessions) as s:
        s.execute(sa.update(User).where(User.email == address).values(active=False))
    with env.smtp() as s, pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(address, token)


def test_mail_from_an_address_the_user_may_not_send_from_is_550_5_7_1(env: Env) -> None:
    address, token = env.sender()
    colleague, _ = env.sender()
    with env.logged_in(address, token) as s:
        for other in (colleague, "someone@elsewhere.example"):
            assert code_of(s.mail(other)) == (550, b"5.7.1")
        assert code_of(s.mail(address)) == (250, b"2.1.0")  # the session goes on


def test_header_from_not_the_envelope_sender_is_550_after_data_and_stores_nothing(
    env: Env,
) -> None:
    address, token = env.sender()
    colleague, _ = env.sender()
    with env.logged_in(address, token) as s:
        s.mail(address)
        s.rcpt("ken@acme.example")
        assert code_of(s.data(mail(colleague, ["ken@acme.example"]))) == (550, b"5.7.1")
    assert env.outboxes() == []
    assert env.queue.calls == []


def test_accepted_mail_is_queued_as_the_client_wrote_it_then_enqueued(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    address, token = env.sender()
    body = "Secret pricing in the body."
    raw = mail(address, ["ken@acme.example"], bcc="boss@acme.example", body=body)
    with env.logged_in(address, token) as s:
        s.mail(address)
        for rcpt in ("Ken@Acme.example", "boss@acme.example"):
            assert code_of(s.rcpt(rcpt)) == (250, b"2.1.5")
        code, text = s.data(raw)
    [row] = env.outboxes()
    assert (code, text) == (250, f"2.0.0 queued as {row.id}".encode())
    assert (row.status, row.message_id, row.mail_from) == (
        "queued",
        "client-1@mua.example",
        address,
    )
    assert row.track is False
    [copy] = env.copies(row.id)
    assert copy.recipients == ["ken@acme.example", "boss@acme.example"]
    wire = email.message_from_bytes(copy.raw, policy=email.policy.default)
    assert wire["Bcc"] is None and b"boss@acme.example" not in copy.raw
    assert wire["Message-ID"] == "<client-1@mua.example>"
    assert wire.get_content().strip() == body
    # Enqueued once, after the commit: another session already saw the queued row.
    assert env.queue.calls == [[row.id]]
    assert env.queue.visible == [["queued"]]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("inboxlog"))
    assert f"outbox={row.id}" in ours
    assert token not in ours and body not in ours


def test_mail_without_message_id_gets_one_at_the_senders_domain(env: Env) -> None:
    address, token = env.sender()
    with env.logged_in(address, token) as s:
        s.mail(address)
        s.rcpt("ken@acme.example")
        assert s.data(mail(address, ["ken@acme.example"], message_id=None))[0] == 250
    [row] = env.outboxes()
    assert row.message_id.endswith("@ours.example")
    [copy] = env.copies(row.id)
    wire = email.message_from_bytes(copy.raw, policy=email.policy.default)
    assert wire["Message-ID"] == f"<{row.message_id}>"


def test_recipients_beyond_the_bound_are_452_4_5_3(env: Env) -> None:
    address, token = env.sender()
    with env.logged_in(address, token) as s:
        s.mail(address)
        for i in range(MAX_RECIPIENTS):
            assert s.rcpt(f"r{i}@acme.example")[0] == 250
        assert code_of(s.rcpt("one-more@acme.example")) == (452, b"4.5.3")


def test_declared_size_beyond_the_limit_is_552_5_3_4(env: Env) -> None:
    address, token = env.sender()
    with env.logged_in(address, token) as s:
        limit = int(s.esmtp_features["size"])
        assert code_of(s.mail(address, [f"SIZE={limit + 1}"])) == (552, b"5.3.4")


def test_revoked_token_stops_the_session_at_data_and_mail(env: Env) -> None:
    address, token = env.sender()
    with env.logged_in(address, token) as s:
        s.mail(address)
        s.rcpt("ken@acme.example")
        with transaction(env.sessions) as db:
            db.execute(sa.delete(ApiToken).where(ApiToken.user_id == env.world.user_id(address)))
        assert code_of(s.data(mail(address, ["ken@acme.example"]))) == (550, b"5.7.8")
        assert code_of(s.mail(address)) == (550, b"5.7.8")
    assert env.outboxes() == []


def test_nul_in_a_message_is_refused_for_good(env: Env) -> None:
    address, token = env.sender()
    raw = mail(address, ["ken@acme.example"]).replace(b"Subject: Quote", b"Subject: Qu\x00ote")
    with env.logged_in(address, token) as s:
        s.mail(address)
        s.rcpt("ken@acme.example")
        assert code_of(s.data(raw)) == (554, b"5.6.0")
    assert env.outboxes() == []


def test_database_down_at_data_is_451_4_3_0(env: Env, tmp_path: Path) -> None:
    address, token = env.sender()
    handler = env.listener.server.handler
    down = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    with env.logged_in(address, token) as s:
        s.mail(address)
        s.rcpt("ken@acme.example")
        handler.sessions = down
        try:
            assert code_of(s.data(mail(address, ["ken@acme.example"]))) == (451, b"4.3.0")
        finally:
            handler.sessions = env.sessions
    assert env.outboxes() == []


def test_starting_without_a_certificate_is_a_config_error(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, submission_port=0)
    sessions = make_session_factory(make_engine(db_url))
    with pytest.raises(ConfigError, match="INBOXLOG_SMTP_TLS_CERT"):
        build_submission(settings, sessions, None)
    # The gateway command refuses to start at all, before anything listens.
    with pytest.raises(ConfigError, match="INBOXLOG_SMTP_TLS_CERT"):
        asyncio.run(serve(settings, sessions, RecordingQueue(sessions)))  # type: ignore[arg-type]


def test_implicit_tls_takes_auth_from_the_first_command_and_nothing_in_clear(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """INBOXLOG_SUBMISSION_TLS_PORT: TLS from the first byte (465 style). No STARTTLS is
    offered (the session is TLS already), AUTH is, and the same checks apply; a client that
    speaks plain SMTP to it gets no greeting."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    ca, cert, key = _write_tls_material(tmp_path)
    settings = make_settings(
        db_url, tmp_path, smtp_tls_cert=str(cert), smtp_tls_key=str(key), submission_tls_port=0
    )
    caplog.set_level(logging.DEBUG)
    queue = RecordingQueue(sessions)
    listener = Listener(build_submission(settings, sessions, queue, implicit_tls=True))
    env = Env(new_world(sessions), sessions, listener, queue, ca)
    try:
        address, token = env.sender()
        context = ssl.create_default_context(cafile=str(ca))
        with smtplib.SMTP_SSL("127.0.0.1", listener.port, context=context, timeout=10) as s:
            s.ehlo("client.example")
            assert "starttls" not in s.esmtp_features
            assert set(s.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
            assert s.mail(address)[0] == 530  # MAIL still waits for AUTH
            s.user, s.password = address, token + "x"
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                s.auth("PLAIN", s.auth_plain)
            assert refused.value.smtp_code == 535
        with smtplib.SMTP_SSL("127.0.0.1", listener.port, context=context, timeout=10) as s:
            assert s.login(address, token)[0] == 235
            assert code_of(s.mail("someone.else@ours.example")) == (550, b"5.7.1")
            s.rset()
            s.mail(address)
            s.rcpt("ken@acme.example")
            code, _ = s.data(mail(address, ["ken@acme.example"]))
        assert code == 250
        [row] = env.outboxes()
        assert queue.calls == [[row.id]]
        with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
            smtplib.SMTP("127.0.0.1", listener.port, timeout=1)  # plain SMTP: no greeting
        # aiosmtpd's "AUTH without TLS" notice is wrong here (TLS throughout): not logged.
        assert not [r for r in caplog.records if "auth_require_tls" in r.getMessage()]
    finally:
        listener.close()
        engine.dispose()

"""Hostile mail on a real stack (SMTP gateway, 2 Celery workers, PostgreSQL, Redis): messages
built to make regular expressions and parsers take quadratic time are processed in time linear in
their size, and the 20 ordinary messages sent right after them are logged within a minute."""

from __future__ import annotations

import time

import sqlalchemy as sa

from shared.db.models import Decision, StoredMessage
from tests.e2e.mail import message
from tests.support.stack import Stack, wait_for
from tests.support.world import new_world

MB = 1 << 20


def html_of_angle_brackets() -> bytes:
    head = (
        b"From: alice@ours.example\r\nTo: ken@acme.example\r\nSubject: lt-bomb\r\n"
        b"Message-ID: <lt-bomb@ours.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=us-ascii\r\n\r\n"
    )
    body = b"<" * MB
    return head + b"\r\n".join(body[i : i + 998] for i in range(0, len(body), 998)) + b"\r\n"


def dsn_with_a_long_final_recipient() -> bytes:
    boundary = b"b0undary"
    recipient = b"Final-Recipient: rfc822;" + b"a" * (MB - 64)  # one line, as long as we take
    return b"\r\n".join(
        [
            b"From: MAILER-DAEMON@mx.acme.example",
            b"To: alice@ours.example",
            b"Subject: Undelivered Mail Returned to Sender",
            b"Message-ID: <dsn-bomb@mx.acme.example>",
            b"MIME-Version: 1.0",
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=" + boundary,
            b"",
            b"--" + boundary,
            b"Content-Type: text/plain",
            b"",
            b"Delivery failed.",
            b"--" + boundary,
            b"Content-Type: message/delivery-status",
            b"",
            b"Reporting-MTA: dns; mx.acme.example",
            b"",
            recipient,
            b"Action: failed",
            b"Status: 5.1.1",
            b"--" + boundary + b"--",
            b"",
        ]
    )


def test_hostile_messages_take_linear_time_and_delay_nobody(stack: Stack) -> None:
    world = new_world(stack.sessions)
    _, team = world.inbox("Support", [world.admin_id])
    hostile = {"lt-bomb": html_of_angle_brackets(), "dsn-bomb": dsn_with_a_long_final_recipient()}
    t0 = time.monotonic()
    with stack.dialogue() as smtp:
        smtp.sendmail("alice@ours.example", [world.bcc], hostile["lt-bomb"])
        smtp.sendmail("mailer-daemon@mx.acme.example", [team], hostile["dsn-bomb"])
        for i in range(20):
            raw = message("alice@ours.example", [f"c{i}@acme.example"], subject=f"normal {i}")
            assert smtp.sendmail("alice@ours.example", [world.bcc], raw) == {}
    sent = time.monotonic() - t0

    def decided() -> list[tuple[str | None, str, float]]:
        with stack.sessions() as s:
            return [
                (subject, outcome, (done - received).total_seconds())
                for subject, outcome, done, received in s.execute(
                    sa.select(
                        Decision.subject,
                        Decision.outcome,
                        StoredMessage.processed_at,
                        StoredMessage.received_at,
                    )
                    .join(StoredMessage, StoredMessage.id == Decision.stored_message_id)
                    .where(Decision.account_id == world.account_id)
                )
            ]

    wait_for(lambda: len(decided()) == 22, 60 + sent, lambda: stack.log("worker")[-3000:])
    got = {subject: (outcome, seconds) for subject, outcome, seconds in decided()}
    print(
        f"\n1 MB '<' HTML: {got['lt-bomb'][1]:.2f} s to its decision ({got['lt-bomb'][0]}); "
        f"1 MB Final-Recipient DSN: {got['Undelivered Mail Returned to Sender'][1]:.2f} s "
        f"({got['Undelivered Mail Returned to Sender'][0]}); slowest normal message "
        f"{max(v[1] for k, v in got.items() if k and k.startswith('normal')):.2f} s"
    )
    assert got["lt-bomb"][0] == "logged"
    assert got["Undelivered Mail Returned to Sender"][0] == "logged"  # kept in the conversation
    assert all(got[f"normal {i}"][0] == "logged" for i in range(20))
    assert max(v[1] for k, v in got.items() if k and k.startswith("normal")) < 60

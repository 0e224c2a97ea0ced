"""Identity, thread subjects and address helpers."""

from __future__ import annotations

import pytest

from shared.mail import parse_message
from shared.mail.addresses import (
    is_free_mail_domain,
    normalize_address,
    parse_address_list,
    registrable_domain,
)
from shared.mail.identity import message_identity
from shared.mail.subjects import thread_subject
from tests.mail.mail_helpers import load

MSG = (
    b"From: A <a@example.com>\r\nTo: b@example.com\r\nSubject: Hello\r\n"
    b"Date: Tue, 04 Mar 2025 05:06:07 +0000\r\nMessage-ID: <id-1@Example.com>\r\n\r\nbody\r\n"
)


def test_identity_stable_across_redelivery() -> None:
    again = b"Received: from relay\r\nDelivered-To: x@ours.example\r\n" + MSG.replace(
        b"<id-1@Example.com>", b" <id-1@example.COM> "
    )
    assert message_identity(parse_message(MSG)) == message_identity(parse_message(again))


def test_identity_broken_message_id_shared_stays_two() -> None:
    other = MSG.replace(b"Subject: Hello", b"Subject: Different")
    assert message_identity(parse_message(MSG)) != message_identity(parse_message(other))


def test_identity_message_id_case_kept_in_local_part() -> None:
    other = MSG.replace(b"<id-1@", b"<ID-1@")
    assert message_identity(parse_message(MSG)) != message_identity(parse_message(other))


def test_identity_without_message_id_uses_body() -> None:
    a = MSG.replace(b"Message-ID: <id-1@Example.com>\r\n", b"")
    b = a.replace(b"body", b"other body")
    assert message_identity(parse_message(a)) == message_identity(parse_message(a))
    assert message_identity(parse_message(a)) != message_identity(parse_message(b))


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: [Acme] Fwd: 返信: 見積", "見積"),
        ("RE：見積", "見積"),
        ("Re[2]: hello   world", "hello world"),
        ("AW: WG: Antw: TR: Angebot", "Angebot"),
        ("Fw: FW: 転送: 件名", "件名"),
        ("Re: Re: Re:", ""),
        ("Regarding the quote", "Regarding the quote"),
    ],
)
def test_thread_subject(subject: str, expected: str) -> None:
    assert thread_subject(subject) == expected


def test_address_helpers() -> None:
    assert normalize_address("Info@XN--R8JZ45G.JP") == "info@例え.jp"
    assert registrable_domain("mail.acme.co.jp") == "acme.co.jp"
    assert registrable_domain("co.jp") is None
    assert is_free_mail_domain("gmail.com")
    assert is_free_mail_domain("docomo.ne.jp") and is_free_mail_domain("ezweb.ne.jp")
    assert is_free_mail_domain("i.softbank.jp") and is_free_mail_domain("di.pdx.ne.jp")
    assert not is_free_mail_domain("acme.co.jp")
    assert parse_address_list("Group: a@x.example, b@y.example;, undisclosed-recipients:;") == (
        parse_address_list("a@x.example")[0],
        parse_address_list("b@y.example")[0],
    )


def test_header_accessor_decodes_all_occurrences() -> None:
    pm = load("address_groups_idn.eml")
    assert pm.header("Delivered-To") == ("Team@Ours.Example",)
    assert pm.header("x-missing") == ()

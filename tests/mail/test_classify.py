"""Message kinds (§7 ordering) and bounce details, on hand-made cases."""

from __future__ import annotations

import pytest

from shared.mail import parse_message
from tests.mail.mail_helpers import load


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("bounce_dsn_postfix.eml", "bounce"),
        ("bounce_qmail_nonstandard.eml", "bounce"),
        ("bounce_jp_carrier.eml", "bounce"),
        ("list_list_id.eml", "list"),
        ("list_unsubscribe_bulk.eml", "list"),
        ("normal_unsubscribe_without_precedence.eml", "normal"),
        ("auto_reply_auto_submitted.eml", "auto_reply"),
        ("auto_reply_x_autoreply.eml", "auto_reply"),
        ("auto_reply_precedence.eml", "auto_reply"),
        ("auto_reply_exchange_pair.eml", "auto_reply"),
        ("auto_reply_subject_en.eml", "auto_reply"),
        ("auto_reply_subject_ja.eml", "auto_reply"),
        ("auto_reply_not_submitted_no.eml", "normal"),
        ("normal_mentions_out_of_office.eml", "normal"),
        ("calendar_invite.eml", "calendar"),
        ("forward_gmail_en.eml", "normal"),
    ],
)
def test_kind(name: str, kind: str) -> None:
    assert load(name).kind == kind


@pytest.mark.parametrize(
    ("name", "message_id", "failed"),
    [
        ("bounce_dsn_postfix.eml", "Sent.Quote.42@ours.example", ("nobody@customer.example",)),
        (
            "bounce_qmail_nonstandard.eml",
            "Qmail.Original.7@ours.example",
            ("gone@customer.example",),
        ),
        ("bounce_jp_carrier.eml", "Carrier.Orig.9@ours.example", ("keitai@docomo.example.ne.jp",)),
    ],
)
def test_bounce_info(name: str, message_id: str, failed: tuple[str, ...]) -> None:
    pm = load(name)
    assert pm.bounce is not None
    assert pm.bounce.original_message_id == message_id
    assert pm.bounce.failed_recipients == failed
    assert pm.is_noreply_sender
    assert pm.attachments == ()  # delivery-report parts are not attachments


def test_bounce_outranks_list_and_auto_reply() -> None:
    raw = load("bounce_qmail_nonstandard.eml").raw.replace(
        b"Subject:", b"List-Id: <x.example>\nAuto-Submitted: auto-replied\nSubject:", 1
    )
    assert parse_message(raw).kind == "bounce"


def test_list_outranks_auto_reply() -> None:
    raw = load("list_list_id.eml").raw.replace(
        b"Subject:", b"Auto-Submitted: auto-generated\r\nSubject:", 1
    )
    assert parse_message(raw).kind == "list"


def test_normal_message_is_not_noreply() -> None:
    assert not load("forward_gmail_en.eml").is_noreply_sender
    pm = parse_message(b"From: No Reply <no-reply@shop.example>\r\nSubject: Receipt\r\n\r\nx")
    assert pm.is_noreply_sender and pm.kind == "normal"

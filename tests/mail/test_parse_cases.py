"""Hand-made cases (tests/data/mail) with exact expected values: charsets, headers,
addresses, attachments and malformed input."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from shared.mail import Address, parse_message
from tests.mail.mail_helpers import DATA, load


@pytest.mark.parametrize(
    ("name", "subject", "text"),
    [
        (
            "charset_iso2022jp_cp932_ext.eml",
            "①㈱見積のご依頼",
            "山田様\n\nいつもお世話になっております。①②③ ㈱テスト 髙橋です。",
        ),
        (
            "charset_shift_jis.eml",
            "お見積りの件、承知しました。①髙﨑",
            "お見積りの件、承知しました。①髙﨑",
        ),
        ("charset_cp932_x_sjis_label.eml", "cp932", "ＮＥＣ特殊文字：№㈲℡ ≒≡∫"),
        ("charset_euc_jp.eml", "EUC件名", "こんにちは、EUC-JPのメールです。俱楽部"),
        ("charset_gb2312_gbk_chars.eml", "朱镕基", "总理朱镕基与陶喆的会议记录"),
        ("charset_unknown_label.eml", "unknown", "Grüße aus Köln — naïve café"),
        (
            "charset_missing_label_8bit.eml",
            "missing",
            "本日の会議の議事録をお送りします。ご確認のほど、よろしくお願いいたします。" * 3,
        ),
        ("charset_utf8_raw_headers_idn.eml", "生のUTF-8件名です", "本文です。"),
        ("subject_rfc2047_split_multibyte.eml", "見積書送付のお知らせ", "body"),
        ("subject_rfc2047_mixed_q_and_text.eml", "Re: Grüße aus Köln !", "body"),
    ],
)
def test_charsets_and_subjects(name: str, subject: str, text: str) -> None:
    pm = load(name)
    assert pm.subject == subject
    assert pm.text.strip() == text
    assert pm.defects == ()


def test_iso2022jp_display_name_with_cp932_kanji() -> None:
    pm = load("charset_iso2022jp_cp932_ext.eml")
    assert pm.from_ == Address("takahashi@example.co.jp", "髙橋")
    assert pm.date == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert pm.date_utcoffset == timedelta(hours=9)


def test_raw_utf8_and_idn_addresses() -> None:
    pm = load("charset_utf8_raw_headers_idn.eml")
    assert pm.from_ == Address("taro@例え.jp", "山田 太郎")
    assert pm.to == (Address("info@例え.jp", None), Address("sales@ours.example", "営業"))


def test_groups_ids_and_obsolete_date() -> None:
    pm = load("address_groups_idn.eml")
    assert pm.from_ == Address("taro.yamada@example.co.jp", "Yamada, Taro")
    assert pm.to == (
        Address("alice@ours.example"),
        Address("bob@ours.example", "Bob B"),
        Address("carol@例え.jp"),
    )
    assert pm.cc == () and pm.bcc == ()
    assert pm.reply_to == (Address("reply@example.co.jp", "善本"),)
    assert pm.delivered_to == (Address("team@ours.example"), Address("sales@ours.example"))
    assert pm.message_id == "Mixed.Case@Example.COM"
    assert pm.in_reply_to == "Parent.ID@Example.COM"
    assert pm.references == ("Root@example.com", "Parent.ID@Example.COM")
    # "4 Mar 25 14:06 JST": two-digit year (RFC 5322 §4.3) and the JST zone.
    assert pm.date == datetime(2025, 3, 4, 5, 6, tzinfo=UTC)
    assert pm.header("subject") == ("groups",)
    assert pm.header("X-Original-To") == ("sales@ours.example",)


def test_attachments_per_spec() -> None:
    pm = load("attachment_rfc2231_rfc2047_names.eml")
    pdf = b"%PDF-1.4 fake pdf payload\n" * 10
    assert [(a.filename, a.content_type, a.size, a.inline) for a in pm.attachments] == [
        ("見積書_2025.pdf", "application/pdf", len(pdf), False),
        ("潜在顧客リスト.csv", "application/octet-stream", 5, False),
        ("photo.jpg", "image/jpeg", 8, True),
    ]
    assert pm.attachments[0].sha256 == hashlib.sha256(pdf).hexdigest()
    # The named text/plain body alternative and the inline image without filename are not
    # attachments.
    assert pm.text == "Please find the quote attached."


def test_attached_message_counts_once() -> None:
    pm = load("forward_attached_rfc822.eml")
    assert [(a.filename, a.content_type) for a in pm.attachments] == [
        ("original.eml", "message/rfc822")
    ]
    assert pm.text == "See the attached message."


def test_html_only_is_sanitized_and_text_derived() -> None:
    pm = load("html_only_with_script.eml")
    assert pm.text == "Hello there & welcome\n\nSecond line"
    assert pm.html is not None
    lowered = pm.html.lower()
    assert "script" not in lowered and "onclick" not in lowered and "javascript:" not in lowered
    assert "Hello" in pm.html


@pytest.mark.parametrize(
    ("name", "subject", "text", "defects"),
    [
        ("malformed_bad_base64.eml", "bad base64", "Hello world", ("invalid_base64",)),
        (
            "malformed_broken_boundary.eml",
            "broken boundary",
            "--WRONG\nContent-Type: text/plain\n\nThe start boundary never appears.",
            ("start_boundary_not_found", "multipart_invariant_violation"),
        ),
        (
            "malformed_unclosed_boundary.eml",
            "unclosed boundary",
            "first part text",
            ("close_boundary_not_found",),
        ),
        ("malformed_nul_bytes.eml", "nulbytes", "beforeafter", ("nul_bytes",)),
        ("malformed_header_without_colon.eml", "after", "body text", ("header_without_colon",)),
        (
            "malformed_missing_blank_line.eml",
            "no separator",
            "<html>body starts here</html>",
            ("missing_header_body_separator",),
        ),
    ],
)
def test_malformed_recorded_not_raised(name: str, subject: str, text: str, defects) -> None:
    pm = load(name)
    assert pm.subject == subject
    assert pm.text == text
    assert pm.defects == defects


def test_bad_base64_attachment_decodes_what_it_can() -> None:
    pm = load("malformed_bad_base64.eml")
    assert [(a.filename, a.size) for a in pm.attachments] == [("data.bin", 3)]


def test_rfc2231_parameter_with_8bit_charset_label_does_not_raise() -> None:
    # Found by test_properties: the stdlib hands back an already-decoded value with U+FFFD.
    raw = (DATA / "attachment_rfc2231_rfc2047_names.eml").read_bytes()
    pm = parse_message(raw.replace(b"filename*0*=utf-8''", b"filename*0*=utf-8\x80'"))
    assert len(pm.attachments) == 3 and pm.attachments[0].filename.endswith("_2025.pdf")


def test_snippets_drop_quotes_and_signatures() -> None:
    assert load("reply_quoted_snippet.eml").snippet == "Thanks, 10 units is fine."
    assert load("reply_quoted_snippet_ja.eml").snippet == "承知しました。"
    assert load("forward_gmail_en.eml").snippet == "FYI"
    assert load("forward_apple_fr.eml").snippet == ""


def test_missing_everything() -> None:
    pm = parse_message(b"")
    assert (pm.from_, pm.subject, pm.date, pm.message_id, pm.text) == (None, "", None, None, "")
    assert pm.references == () and pm.kind == "normal"


def test_from_without_address_is_none() -> None:
    pm = parse_message(b"From: Just A Name\r\nSubject: x\r\n\r\nbody")
    assert pm.from_ is None


def test_recipient_bound() -> None:
    to = ", ".join(f"u{i}@example.com" for i in range(1500))
    pm = parse_message(f"From: a@example.com\r\nTo: {to}\r\n\r\nbody".encode())
    assert len(pm.to) == 1000
    assert "recipient_limit" in pm.defects


def test_mime_depth_bound() -> None:
    head = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    body = b""
    for i in range(1, 60):
        body += f"--b{i - 1}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n".encode()
    pm = parse_message(head + body + b"--b59\r\nContent-Type: text/plain\r\n\r\ndeep\r\n")
    assert "mime_depth_limit" in pm.defects


def test_immutable() -> None:
    pm = load("forward_gmail_en.eml")
    with pytest.raises(AttributeError):
        pm.subject = "x"  # type: ignore[misc]

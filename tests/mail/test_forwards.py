"""Forward extraction: the crisp-email-forward-parser fragments (our own expected values,
read off each fixture) and hand-made full messages for every layout and language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.mail import Address
from shared.mail.forwards import extract_forward, extract_forward_text
from tests.mail.mail_helpers import CRISP, corpus_or_skip, load

S = "Integer consequat non purus"
J = ("john.doe@acme.com", "John Doe")
URG = "TR: ***URGENT*** 2028/22/kb Integer consequat non purus"


def d(*args: int) -> str:
    return datetime(*args, tzinfo=UTC).isoformat()


# fixture -> (status, from address, from name, subject, date as UTC ISO or None)
# Dates without a zone are read as UTC here (no forward Date header is given).
CRISP_TABLE: dict[str, tuple] = {
    "apple_mail_de_body.txt": ("extracted", *J, S, d(2021, 10, 26, 11, 25, 8)),
    "apple_mail_en_body.txt": ("extracted", *J, S, d(2021, 10, 25, 8, 17, 21)),
    "apple_mail_en_body_variant_1.txt": ("extracted", *J, S, d(2021, 10, 25, 8, 17, 21)),
    "apple_mail_en_body_variant_13.txt": ("extracted", *J, S, d(2022, 8, 17, 7, 6, 24)),
    "apple_mail_en_body_variant_2.txt": ("extracted", *J, S, d(2021, 10, 25, 8, 17, 21)),
    "apple_mail_en_body_variant_3.txt": ("extracted", *J, S, d(2021, 10, 25, 8, 17, 21)),
    "apple_mail_en_body_variant_4.txt": ("not_forward",),
    "apple_mail_en_body_variant_5.txt": (
        "extracted",
        "john.doe@acme.com",
        None,
        S,
        d(2021, 10, 25, 8, 17, 21),
    ),
    "apple_mail_en_body_variant_6.txt": ("extracted", *J, S, d(2021, 7, 16, 17, 24, 14)),
    "apple_mail_en_body_variant_7.txt": ("extracted", *J, S, d(2021, 7, 16, 17, 24, 14)),
    "apple_mail_es_body.txt": ("extracted", *J, S, d(2021, 10, 26, 11, 25, 8)),
    "apple_mail_fr_body.txt": ("extracted", *J, S, d(2021, 10, 26, 11, 25, 8)),
    "gmail_de_body.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "gmail_en_body.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "gmail_en_body_variant_1.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "gmail_en_body_variant_14.txt": (
        "extracted",
        "thibault@acme.com",
        "Thibault",
        URG,
        d(2023, 2, 21, 16, 49),
    ),
    "gmail_en_body_variant_15.txt": ("extracted", *J, URG, d(2021, 10, 27, 9, 31)),
    "gmail_en_body_variant_2.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "gmail_en_body_variant_3.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "gmail_en_body_variant_4.txt": ("not_forward",),
    "gmail_es_body.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "gmail_fr_body.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "hubspot_de_body.txt": ("extracted", *J, S, d(2022, 9, 19, 21, 55, 44)),
    "hubspot_en_body.txt": ("extracted", *J, S, d(2022, 9, 19, 21, 55, 44)),
    "hubspot_en_body_variant_1.txt": ("extracted", *J, S, d(2022, 9, 19, 21, 55, 44)),
    "hubspot_en_body_variant_2.txt": ("extracted", *J, S, d(2022, 9, 19, 21, 55, 44)),
    "hubspot_en_body_variant_4.txt": ("not_forward",),
    "hubspot_es_body.txt": ("extracted", *J, S, d(2022, 9, 19, 21, 55, 44)),
    "hubspot_fr_body.txt": ("extracted", *J, S, d(2022, 9, 19, 13, 20, 5)),
    "hubspot_ja_body.txt": ("extracted", *J, S, d(2022, 9, 19, 21, 55, 44)),
    # "02/10/2023": day-first or month-first cannot be told apart, so no date.
    "ionos_one_and_one_en_body.txt": ("extracted", *J, S, None),
    "ionos_one_and_one_en_body_variant_2.txt": ("extracted", *J, S, None),
    "mailmate_en_body.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "mailmate_en_body_variant_1.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "mailmate_en_body_variant_2.txt": ("extracted", *J, S, d(2021, 10, 27, 9, 31)),
    "mailmate_en_body_variant_4.txt": ("not_forward",),
    "missive_en_body.txt": ("extracted", *J, S, d(2022, 7, 19, 15, 9)),
    "missive_en_body_variant_1.txt": ("extracted", *J, S, d(2022, 7, 19, 15, 36)),
    "missive_en_body_variant_2.txt": ("extracted", *J, S, d(2022, 7, 19, 15, 36)),
    "missive_en_body_variant_3.txt": ("extracted", *J, S, d(2022, 7, 1, 17, 3)),
    "missive_en_body_variant_4.txt": ("not_forward",),
    "new_outlook_2019_de_body.txt": ("extracted", *J, S, d(2021, 10, 28, 12, 46)),
    "new_outlook_2019_en_body.txt": ("extracted", *J, S, d(2021, 10, 28, 12, 46)),
    "new_outlook_2019_en_body_variant_1.txt": ("extracted", *J, S, d(2021, 10, 28, 12, 46)),
    "new_outlook_2019_en_body_variant_14.txt": ("extracted", *J, S, d(2023, 4, 6, 16, 17)),
    "new_outlook_2019_en_body_variant_14_1.txt": ("extracted", *J, S, d(2023, 4, 6, 16, 17)),
    "new_outlook_2019_en_body_variant_15.txt": ("extracted", *J, S, d(2023, 4, 6, 16, 17)),
    "new_outlook_2019_en_body_variant_2.txt": ("extracted", *J, S, d(2021, 10, 28, 12, 46)),
    "new_outlook_2019_en_body_variant_3.txt": ("extracted", *J, S, d(2021, 10, 28, 12, 46)),
    # A bare Outlook header block under a "Re:" subject is quoted history, not a forward.
    "new_outlook_2019_en_body_variant_4.txt": ("not_forward",),
    "new_outlook_2019_es_body.txt": ("extracted", *J, S, d(2021, 10, 28, 12, 46)),
    "new_outlook_2019_fr_body.txt": ("extracted", *J, S, d(2021, 10, 28, 12, 6)),
    "outlook_2013_en_body.txt": ("extracted", *J, S, d(2021, 10, 25, 11, 17)),
    "outlook_live_body.txt": ("extracted", *J, S, d(2021, 10, 27, 15, 14)),
    "outlook_live_en_body_variant_1.txt": ("extracted", *J, S, d(2021, 10, 27, 15, 14)),
    "outlook_live_en_body_variant_10.txt": ("extracted", *J, S, d(2021, 10, 27, 15, 14)),
    "outlook_live_en_body_variant_11.txt": (
        "extracted",
        "john.doe@acme.com",
        "John, Doe",
        S,
        d(2021, 10, 27, 15, 14),
    ),
    "outlook_live_en_body_variant_14.txt": ("extracted", *J, S, d(2023, 4, 6, 16, 17)),
    "outlook_live_en_body_variant_15.txt": ("extracted", *J, S, d(2023, 4, 6, 16, 17)),
    "outlook_live_en_body_variant_2.txt": ("extracted", *J, S, d(2021, 10, 27, 15, 14)),
    "outlook_live_en_body_variant_3.txt": ("extracted", *J, S, d(2021, 10, 27, 15, 14)),
    "outlook_live_en_body_variant_8.txt": ("extracted", *J, S, d(2021, 10, 27, 15, 14)),
    "outlook_live_en_body_variant_9.txt": ("extracted", *J, S, d(2021, 10, 27, 15, 14)),
    "thunderbird_de_body.txt": ("extracted", *J, S, d(2021, 11, 3, 14, 51, 30)),
    "thunderbird_en_body.txt": ("extracted", *J, S, d(2021, 11, 3, 14, 51, 30)),
    "thunderbird_en_body_variant_1.txt": ("extracted", *J, S, d(2021, 11, 3, 14, 51, 30)),
    "thunderbird_en_body_variant_14.txt": (
        "extracted",
        "thibault@acme.com",
        "Thibault",
        URG,
        d(2023, 2, 21, 16, 49),
    ),
    "thunderbird_en_body_variant_15.txt": ("extracted", *J, URG, d(2021, 10, 27, 9, 31)),
    "thunderbird_en_body_variant_2.txt": ("extracted", *J, S, d(2021, 11, 3, 14, 51, 30)),
    "thunderbird_en_body_variant_3.txt": ("extracted", *J, S, d(2021, 11, 3, 14, 51, 30)),
    "thunderbird_en_body_variant_4.txt": ("not_forward",),
    "thunderbird_es_body.txt": ("extracted", *J, S, d(2021, 11, 3, 14, 51, 30)),
    "thunderbird_fr_body.txt": ("extracted", *J, S, d(2021, 11, 3, 14, 51, 30)),
    # "From: John Doe" with no address anywhere: never guess.
    "unknown_en_body_variant_12.txt": ("unreadable",),
    "yahoo_de_body.txt": ("extracted", *J, S, d(2021, 11, 2, 8, 26, 50)),
    "yahoo_en_body.txt": ("extracted", *J, S, d(2021, 11, 2, 8, 26, 50)),
    "yahoo_en_body_variant_1.txt": ("extracted", *J, S, d(2021, 11, 2, 8, 26, 50)),
    "yahoo_en_body_variant_2.txt": ("extracted", *J, S, d(2021, 11, 2, 8, 26, 50)),
    "yahoo_en_body_variant_3.txt": ("extracted", *J, S, d(2021, 11, 2, 8, 26, 50)),
    "yahoo_en_body_variant_4.txt": ("not_forward",),
    "yahoo_es_body.txt": ("extracted", *J, S, d(2021, 11, 2, 8, 26, 50)),
    "yahoo_fr_body.txt": ("extracted", *J, S, d(2021, 11, 2, 8, 26, 50)),
}


@pytest.mark.parametrize("name", sorted(CRISP_TABLE))
def test_crisp_fixture(name: str) -> None:
    corpus_or_skip()
    body = (CRISP / name).read_text(encoding="utf-8")
    subject_file = CRISP / name.replace("_body", "_subject")
    subject = subject_file.read_text(encoding="utf-8") if subject_file.exists() else ""
    expected = CRISP_TABLE[name]
    fr = extract_forward_text(body, subject)
    assert fr.status == expected[0]
    if expected[0] != "extracted":
        assert fr.original is None
        return
    o = fr.original
    assert o is not None and o.from_ is not None
    assert (o.from_.address, o.from_.name, o.subject) == expected[1:4]
    assert (o.date.isoformat() if o.date else None) == expected[4]
    assert o.text  # a body was found


def test_crisp_recipients_detail() -> None:
    corpus_or_skip()
    fr = extract_forward_text((CRISP / "outlook_live_en_body_variant_11.txt").read_text())
    assert fr.original is not None
    assert fr.original.to == (
        Address("bessie.berry@acme.com", "Bessie, Berry"),
        Address("suzanne@globex.corp"),
    )
    assert fr.original.cc == (
        Address("walter.sheltan@acme.com", "Walter, Sheltan"),
        Address("nicholas@globex.corp", "Nicholas, Landers"),
    )


JST = 9


@pytest.mark.parametrize(
    ("name", "frm", "subject", "date", "text", "to", "cc"),
    [
        (
            "forward_gmail_en.eml",
            Address("jane@customer.example", "Jane Customer"),
            "Quote request",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "Could you send a quote for 10 units?",
            (Address("hanako@ours.example", "Hanako Sato"),),
            (Address("bob@customer.example", "Bob"),),
        ),
        (
            "forward_gmail_ja.eml",
            Address("ichiro@kyaku.co.jp", "鈴木 一郎"),
            "見積のお願い",
            datetime(2025, 3, 4, 5, 6, tzinfo=UTC),
            "見積をお願いします。",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_outlook_old_en.eml",
            Address("jane@customer.example", "Jane Customer"),
            "Contract",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "Signed contract attached.",
            (),
            (Address("legal@customer.example", "Legal"),),
        ),
        (
            "forward_outlook_new_en.eml",
            Address("jane@customer.example", "Jane Customer"),
            "Renewal",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "We would like to renew.",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_outlook_ja.eml",
            Address("hanako.tanaka@torihiki.co.jp", "田中 花子"),
            "打ち合わせの件",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "来週の打ち合わせについてご相談です。",
            (Address("hanako@ours.example", "佐藤 花子"),),
            (Address("boss@torihiki.co.jp", "上司"),),
        ),
        (
            "forward_outlook_ja_fullwidth.eml",
            Address("yamamoto@example.co.jp", "山本"),
            "ご案内",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "ご案内です。",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_apple_en.eml",
            Address("jane@customer.example", "Jane Customer"),
            "Samples",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "Please send samples.",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_thunderbird_en.eml",
            Address("jane@customer.example", "Jane Customer"),
            "Invoice",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "Invoice question.",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_yahoo_en.eml",
            Address("jane@customer.example", "Jane Customer"),
            "Delivery",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "When will it arrive?",
            (Address("hanako@ours.example"),),
            (),
        ),
        # Zone-less block dates are read in the forward's own zone (+0900).
        (
            "forward_outlook_de.eml",
            Address("hans@kunde.de", "Hans Kunde"),
            "Angebot",
            datetime(2025, 3, 3, 0, 6, tzinfo=UTC),
            "Bitte um ein Angebot.",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_apple_fr.eml",
            Address("marie@client.fr", "Marie Client"),
            "Devis",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "Merci pour le devis.",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_outlook_es.eml",
            Address("juan@cliente.es", "Juan Cliente"),
            "Pedido",
            datetime(2025, 3, 3, 0, 6, tzinfo=UTC),
            "Confirmo el pedido.",
            (Address("hanako@ours.example"),),
            (),
        ),
        (
            "forward_of_forward_gmail.eml",
            Address("real@customer.example", "Real Customer"),
            "Original question",
            datetime(2025, 3, 3, 8, 6, tzinfo=UTC),
            "The real question.",
            (Address("colleague@ours.example"),),
            (),
        ),
        (
            "forward_unparseable_date.eml",
            Address("jane@customer.example", "Jane Customer"),
            "Odd date",
            None,
            "Body.",
            (Address("hanako@ours.example"),),
            (),
        ),
    ],
)
def test_inline_forward_messages(name, frm, subject, date, text, to, cc) -> None:
    pm = load(name)
    assert pm.date_utcoffset == timedelta(hours=JST)
    fr = extract_forward(pm)
    assert fr.status == "extracted"
    o = fr.original
    assert o is not None
    assert (o.from_, o.subject, o.date, o.text, o.to, o.cc) == (frm, subject, date, text, to, cc)
    assert o.raw is None


def test_attached_message_forward() -> None:
    pm = load("forward_attached_rfc822.eml")
    fr = extract_forward(pm)
    assert fr.status == "extracted" and fr.layout == "attached"
    o = fr.original
    assert o is not None and o.raw is not None
    assert o.from_ == Address("jane@customer.example", "Jane Customer")
    assert o.to == (
        Address("hanako@ours.example", "Hanako Sato"),
        Address("other@customer.example"),
    )
    assert o.cc == (Address("cc@customer.example"),)
    assert o.subject == "Attached original"
    assert o.date == datetime(2025, 3, 3, 8, 6, tzinfo=UTC)
    assert o.message_id == "Original-123@customer.example"
    assert o.text == "Original body."


def test_unreadable_forward() -> None:
    fr = extract_forward(load("forward_unreadable_name_only.eml"))
    assert fr.status == "unreadable" and fr.original is None


def test_plain_message_is_not_forward() -> None:
    assert extract_forward(load("reply_quoted_snippet.eml")).status == "not_forward"
    assert extract_forward(load("normal_mentions_out_of_office.eml")).status == "not_forward"


def test_banner_without_from_is_unreadable() -> None:
    fr = extract_forward_text("hi\n\n---------- Forwarded message ---------\nsome text\n")
    assert fr.status == "unreadable"

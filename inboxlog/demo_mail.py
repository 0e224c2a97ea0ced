"""The sample messages `inboxlog demo` sends: one per path a newcomer should see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.header import Header
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid

NOW = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)


def _std(m: EmailMessage | MIMEText, minutes: int) -> None:
    m["Date"] = format_datetime(NOW + timedelta(minutes=minutes))
    m["Message-ID"] = make_msgid(domain="demo.example")


def english_bcc(alice: str) -> bytes:
    m = EmailMessage()
    m["From"] = formataddr(("Alice Sales", alice))
    m["To"] = "Ken Tanaka <ken.tanaka@acme-robotics.example>, Amy Lee <amy.lee@gmail.com>"
    m["Subject"] = "Quote for 40 units of the R2 arm"
    _std(m, 0)
    m.set_content("Hi Ken, hi Amy,\n\nAttached is our quote for 40 units.\n\nBest,\nAlice\n")
    return m.as_bytes()


def japanese_bcc(hanako: str) -> bytes:
    body = (
        "田中様\n\nいつもお世話になっております。\n"
        "見積書を添付いたします。納期は社内で確認中です。\n\n佐藤"
    )
    m = MIMEText(body, "plain", "iso-2022-jp")
    m["From"] = formataddr((str(Header("佐藤 花子", "iso-2022-jp")), hanako))
    m["To"] = formataddr((str(Header("田中 太郎", "iso-2022-jp")), "tanaka@kaisha.co.jp"))
    # The encoded word as text: the same bytes as a Header value, which typeshed does not allow.
    m["Subject"] = Header("お見積りの件（R2アーム）", "iso-2022-jp").encode()
    _std(m, 5)
    return m.as_bytes()


def forwarded_customer_mail(hanako: str) -> bytes:
    m = EmailMessage()
    m["From"] = formataddr(("Hanako Sato", hanako))
    m["To"] = "forward@inboxlog"
    m["Subject"] = "Fwd: Delivery date for our order"
    _std(m, 10)
    m.set_content(
        "Logging this customer mail.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Jane Doe <jane.doe@northwind-trading.example>\n"
        "Date: Mon, Nov 30, 2026 at 5:06 PM\n"
        "Subject: Delivery date for our order\n"
        f"To: Hanako Sato <{hanako}>\n\n"
        "Hello Hanako,\n\nCould you confirm the delivery date for order 1042?\n\nThanks,\nJane\n"
    )
    return m.as_bytes()


def never_log_bcc(alice: str) -> bytes:
    m = EmailMessage()
    m["From"] = formataddr(("Alice Sales", alice))
    m["To"] = "Pat <pat@rival-corp.example>"
    m["Subject"] = "Re: Partnership"
    _std(m, 15)
    m.set_content("Pat, let's talk next week.\n")
    return m.as_bytes()


def auto_reply(to: str) -> bytes:
    m = EmailMessage()
    m["From"] = "Mika Ito <mika.ito@acme-robotics.example>"
    m["To"] = to
    m["Subject"] = "Automatic reply: Order 1042"
    m["Auto-Submitted"] = "auto-replied"
    _std(m, 20)
    m.set_content("I am out of the office until Monday.\n")
    return m.as_bytes()

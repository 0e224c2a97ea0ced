"""Bound tests (spec §6 Bounded work): hostile input at 1 MB is parsed and understood in time
linear in its size.

Each test runs what the worker's ``understand`` stage runs — ``parse_message``, the forward
extraction and the logged email's content (worker/pipeline/content.py) — on one hostile
message, checks the result is right, and that it finished under :data:`CEILING`: generous for
a loaded machine (each takes well under a second), while the backtracking or quadratic code
these replace needs minutes to hours at this size. The figures are in bench/hostile_bench.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from shared.mail import ParsedMessage, parse_message
from shared.mail.forwards import ForwardResult, extract_forward
from shared.mail.markup import html_to_text, sanitize_html
from shared.mail.subjects import thread_subject
from worker.pipeline.content import EmailContent, from_forward, from_parsed

pytestmark = pytest.mark.bound

CEILING = 10.0  # seconds
MB = 1_000_000
T = TypeVar("T")


def within_ceiling(work: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - start
    assert elapsed < CEILING, f"took {elapsed:.1f} s"
    return result


def fill(unit: str, size: int = MB) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def message(
    body: str,
    ctype: str = "text/plain; charset=utf-8",
    subject: str = "Hello",
    sender: str = "Ken <ken@customer.example>",
    extra: str = "",
) -> bytes:
    head = (
        f"From: {sender}\r\nTo: sales@ours.example\r\nSubject: {subject}\r\n"
        f"Date: Tue, 04 Mar 2025 05:06:07 +0000\r\nMessage-ID: <hostile@customer.example>\r\n"
        f"{extra}MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n"
    )
    return head.encode() + body.encode("utf-8")


def understand(raw: bytes) -> tuple[ParsedMessage, ForwardResult, EmailContent | None]:
    """What worker/pipeline/understand.py does for a forward_address message."""
    pm = parse_message(raw)
    fr = extract_forward(pm)
    content = from_forward(pm, fr) if fr.status == "extracted" else from_parsed(pm)
    return pm, fr, content


def html_message(markup: str) -> bytes:
    return message(markup, ctype="text/html; charset=utf-8")


def test_bound_html_of_lt_signs() -> None:
    pm, _, content = within_ceiling(lambda: understand(html_message(fill("<"))))
    assert pm.text == "<" * MB  # "<" not followed by a tag name is text
    assert pm.html is not None and pm.html.startswith("&lt;&lt;")
    assert content is not None and content.snippet.startswith("<<<")


def test_bound_html_of_comment_openers() -> None:
    markup = "<p>Visible</p>" + fill("<!--")
    pm, _, _ = within_ceiling(lambda: understand(html_message(markup)))
    assert pm.text == "Visible"  # the first "<!--" opens a comment that runs to the end
    assert pm.html is not None and "Visible" in pm.html and "--" not in pm.html


def test_bound_html_of_unclosed_tag_openers() -> None:
    markup = "<p>Visible</p>" + fill("<a ")
    pm, _, _ = within_ceiling(lambda: understand(html_message(markup)))
    assert pm.text == "Visible"  # one tag, never closed: dropped at the end of the input


def test_bound_html_with_unclosed_script() -> None:
    for markup in ("<p>Visible</p><script" + fill("x"), "<p>Visible</p><script>" + fill("<a ")):
        pm, _, _ = within_ceiling(lambda markup=markup: understand(html_message(markup)))
        assert pm.text == "Visible"
        assert pm.html is not None and "script" not in pm.html.lower()


def test_bound_html_deeply_nested() -> None:
    depth = 100_000
    markup = "<div>" * depth + "deep" + "</div>" * depth + "<p>after</p>"
    pm, _, _ = within_ceiling(lambda: understand(html_message(markup)))
    assert pm.text == "deep\n\nafter"
    # Nested formatting elements re-opened in every paragraph (quadratic in parsers).
    markup = "".join(f"<p><b id={i}>x{i}" for i in range(60_000))
    text = within_ceiling(lambda: html_to_text(markup))
    assert text.split() == [f"x{i}" for i in range(60_000)]
    sanitized = within_ceiling(lambda: sanitize_html(markup))
    assert "x59999" in sanitized


def test_bound_html_hostile_shapes_for_the_sanitizer() -> None:
    # Character references by the million in one text node (html5ever copies the node per
    # reference), content moved before its table again and again, and 250,000 attributes on
    # one tag (Lexbor and html5ever compare each with all before it). Up to the 8 MB of HTML
    # a body may decode to: these shapes are quadratic at a gentler rate than the others.
    for markup, kept in (
        (fill("&amp;", 8 * MB), "&"),
        (fill("<table><a>x</a>", 4 * MB), "x"),
        ("<a " + " ".join(f"x{i}" for i in range(250_000)) + ">link</a>", "link"),
    ):
        text = within_ceiling(lambda markup=markup: html_to_text(markup))
        assert kept in text
        sanitized = within_ceiling(lambda markup=markup: sanitize_html(markup))
        assert kept.replace("&", "&amp;") in sanitized


def dsn(final_recipient: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\n"
        "To: ken@ours.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\n"
        "Your message to <lost@customer.example> could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {final_recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "Message-ID: <original@ours.example>\r\n\r\n--B--\r\n"
    ).encode()


def test_bound_dsn_with_a_1mb_final_recipient_line() -> None:
    pm, _, content = within_ceiling(lambda: understand(dsn(fill("a"))))
    assert pm.kind == "bounce" and pm.bounce is not None
    # No address in the report field: the recipient comes from the human-readable part.
    assert pm.bounce.failed_recipients == ("lost@customer.example",)
    assert content is not None and content.bounce_of_message_id == "original@ours.example"
    long_address = fill("a") + "@customer.example"
    pm = within_ceiling(lambda: parse_message(dsn(long_address)))
    assert pm.bounce is not None and pm.bounce.failed_recipients == (long_address,)


def test_bound_bounce_body_of_at_signs_and_dots() -> None:
    for junk in ("@.", "a", "a@", "\n"):
        body = "Delivery to lost@customer.example failed.\r\n" + fill(junk)
        raw = message(body, subject="Undelivered Mail", sender="MAILER-DAEMON@mx.example")
        pm, _, _ = within_ceiling(lambda raw=raw: understand(raw))
        assert pm.kind == "bounce" and pm.bounce is not None
        assert pm.bounce.failed_recipients == ("lost@customer.example",)


def test_bound_subject_of_reply_prefixes_and_brackets() -> None:
    subject = "Re: " * 25_000 + "Quote 42"  # 100 KB
    pm, _, _ = within_ceiling(lambda: understand(message("hi", subject=subject)))
    assert within_ceiling(lambda: thread_subject(pm.subject)) == "Quote 42"  # every prefix goes
    subject = "[" * 100_000
    pm, _, _ = within_ceiling(lambda: understand(message("hi", subject=subject)))
    assert within_ceiling(lambda: thread_subject(pm.subject)) == subject  # no tag: nothing goes
    tagged = "[Acme] AW: 返信: Fwd: [" + "x" * 100_000 + "] RE: Quote"
    assert within_ceiling(lambda: thread_subject(tagged)) == "Quote"


def test_bound_long_references_header() -> None:
    ids = " ".join(f"<id{i}@customer.example>" for i in range(40_000))  # about 1 MB
    long_id = "y" * 300_000 + "@customer.example"
    extra = f"References: {ids} <{long_id}>\r\nIn-Reply-To: <{long_id}>\r\n"
    pm, _, content = within_ceiling(lambda: understand(message("hi", extra=extra)))
    assert len(pm.references) == 200 and pm.references[-1] == long_id[:998]
    assert pm.in_reply_to == long_id[:998]
    assert content is not None and content.references == pm.references


def forward(body: str) -> bytes:
    return message(body, subject="Fwd: Quote", sender="Alice <alice@ours.example>")


def test_bound_forward_body_of_quote_markers() -> None:
    block = (
        "---------- Forwarded message ---------\n"
        "From: Ken <ken@customer.example>\nDate: Mon, 3 Mar 2025 10:00:00 +0900\n"
        "Subject: Quote\nTo: alice@ours.example\n\n"
    )
    for junk in (">", "> ", ">\n", "> >\n", " ", "\n"):
        _, fr, content = within_ceiling(lambda junk=junk: understand(forward(block + fill(junk))))
        assert fr.status == "extracted" and fr.original is not None
        assert fr.original.from_ is not None and fr.original.from_.address == "ken@customer.example"
        assert content is not None and content.subject == "Quote"


def test_bound_forward_header_lines_that_never_end() -> None:
    banner = "---------- Forwarded message ---------\n"
    cases = [
        # A From line of 1 MB of letters (an address pattern backtracks over it).
        (banner + "From: " + fill("a") + "\nTo: b@customer.example\n", "unreadable", None),
        # "on behalf of" after 1 MB of spaces.
        (
            banner + "From: ken@customer.example" + fill(" ") + "x\nSubject: Quote\n",
            "extracted",
            "ken@customer.example",
        ),
        # A line of spaces with a word in the middle (a label pattern backtracks over it).
        (fill(" ", MB // 2) + "x" + fill(" ", MB // 2) + "y", "not_forward", None),
        # A To list wrapped over 100,000 lines.
        (
            banner
            + "From: ken@customer.example\nTo: a@customer.example\n"
            + fill("b@customer.example\n"),
            "extracted",
            "ken@customer.example",
        ),
    ]
    for body, status, sender in cases:
        _, fr, _ = within_ceiling(lambda body=body: understand(forward(body)))
        assert fr.status == status
        if sender is not None:
            assert fr.original is not None and fr.original.from_ is not None
            assert fr.original.from_.address == sender


def test_bound_snippet_of_a_wrote_line() -> None:
    body = "On Monday Ken wrote" + " " * 19_000 + "x\n\nthanks"
    pm, _, _ = within_ceiling(lambda: understand(message(body)))
    assert pm.snippet.startswith("On Monday Ken wrote")


def test_bound_mime_parameters() -> None:
    # A Content-Type with 200,000 parameters, and one quoted value full of ";".
    for params in (fill("a=b; "), 'format="' + fill(";")):
        raw = message("Hello", ctype="text/plain; charset=utf-8; " + params)
        pm, _, _ = within_ceiling(lambda raw=raw: understand(raw))
        assert pm.text == "Hello"

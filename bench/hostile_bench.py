"""Hostile-input benchmark (spec §6 Bounded work): seconds to parse and understand one message.

Each input goes through what the worker's ``understand`` stage runs — ``parse_message``, the
forward extraction and the logged email's content — at 1 MB and at 2 MB of hostile payload,
next to a normal 30 KB message. Linear work shows as a 2 MB / 1 MB time ratio near 2 (a
quadratic one near 4). Run: ``.venv/bin/python bench/hostile_bench.py``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_report import Figures, machine, print_figures  # noqa: E402
from shared.mail import parse_message  # noqa: E402
from shared.mail.forwards import extract_forward  # noqa: E402
from shared.mail.subjects import thread_subject  # noqa: E402
from worker.pipeline.content import from_forward, from_parsed  # noqa: E402

MB = 1_000_000
CEILING = 10.0  # seconds: the bound the tests assert (tests/mail/test_hostile_bounds.py)


def fill(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def message(body: str, ctype: str = "text/plain; charset=utf-8", **head: str) -> bytes:
    subject = head.get("subject", "Hello")
    sender = head.get("sender", "Ken <ken@customer.example>")
    extra = head.get("extra", "")
    return (
        f"From: {sender}\r\nTo: sales@ours.example\r\nSubject: {subject}\r\n"
        "Date: Tue, 04 Mar 2025 05:06:07 +0000\r\nMessage-ID: <b@customer.example>\r\n"
        f"{extra}MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n{body}"
    ).encode()


def html(markup: str) -> bytes:
    return message(markup, ctype="text/html; charset=utf-8")


def dsn(final_recipient: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: ken@ours.example\r\n"
        "Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; {final_recipient}\r\nAction: failed\r\n\r\n--B--\r\n"
    ).encode()


BANNER = "---------- Forwarded message ---------\n"
FWD = {"subject": "Fwd: Quote", "sender": "Alice <alice@ours.example>"}

# name -> (build(size), what the payload is)
CASES: dict[str, tuple[Callable[[int], bytes], str]] = {
    "html <": (lambda n: html(fill("<", n)), "HTML-only, all '<'"),
    "html <!--": (lambda n: html(fill("<!--", n)), "HTML-only, '<!--' repeated"),
    "html <a ": (lambda n: html(fill("<a ", n)), "HTML-only, '<a ' repeated"),
    "html <script": (lambda n: html("<script>" + fill("<a ", n)), "unclosed script"),
    "html nested div": (lambda n: html(fill("<div>", n)), "nesting 200,000 per MB"),
    "html <p><b id>": (
        lambda n: html("".join(f"<p><b id={i}>x" for i in range(n // 16))),
        "formatting re-opened per paragraph",
    ),
    "html &amp;": (lambda n: html(fill("&amp;", n)), "character references"),
    "dsn Final-Recipient": (lambda n: dsn(fill("a", n)), "one 1 MB report line"),
    "bounce body @.": (
        lambda n: message(fill("@.", n), subject="Undelivered Mail", sender="MAILER-DAEMON@mx"),
        "non-standard bounce text",
    ),
    "References": (
        lambda n: message("hi", extra="References: " + fill("<a@b> ", n) + "\r\n"),
        "header of ids",
    ),
    "forward quote markers": (lambda n: message(BANNER + fill(">\n", n), **FWD), "'>' lines"),
    "forward From line": (lambda n: message(BANNER + "From: " + fill("a", n), **FWD), "letters"),
    "forward spaces": (lambda n: message(fill(" ", n // 2) + "x" + fill(" ", n // 2), **FWD), ""),
    "MIME parameters": (
        lambda n: message("hi", ctype="text/plain; " + fill("a=b; ", n)),
        "Content-Type parameters",
    ),
}


def understand(raw: bytes) -> None:
    pm = parse_message(raw)
    fr = extract_forward(pm)
    _ = from_forward(pm, fr) if fr.status == "extracted" else from_parsed(pm)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    wall = time.perf_counter()
    fig = Figures()
    print(f"hostile input benchmark — {machine()}\n")
    normal = message(fill("Hello there, this is a normal line of text.\n", 30_000))
    understand(normal)  # warm up imports and caches
    t = min(timed(lambda: understand(normal)) for _ in range(5))
    fig.rows.append(("normal 30 KB message", f"{t:.4f} s", f"{len(normal) / t / MB:,.1f} MB/s"))
    worst = 0.0
    for name, (build, what) in CASES.items():
        one, two = build(MB), build(2 * MB)
        t1, t2 = timed(lambda one=one: understand(one)), timed(lambda two=two: understand(two))
        worst = max(worst, t1, t2)
        fig.rows.append(
            (
                name,
                f"{t1:.3f} s",
                f"{len(one) / t1 / MB:6.1f} MB/s; 2 MB {t2:.3f} s (x{t2 / t1:.1f}) {what}",
            )
        )
    subject = "Re: " * 25_000 + "Quote"
    t = timed(lambda: thread_subject(subject))
    fig.rows.append(("thread_subject 100 KB 'Re: '", f"{t:.4f} s", "conversation key"))
    fig.targets.append(
        (
            "slowest hostile input (1-2 MB)",
            f"{worst:.3f} s",
            f"ceiling {CEILING:.0f} s",
            worst < CEILING,
        )
    )
    fig.notes.append("x = time at 2 MB / time at 1 MB: about 2 for linear work, 4 for quadratic")
    print_figures(fig, time.perf_counter() - wall)


if __name__ == "__main__":
    main()

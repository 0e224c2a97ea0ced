"""Builders for test messages."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "mail"
_n = itertools.count(1)


def message(
    sender: str,
    to: list[str],
    cc: list[str] | None = None,
    subject: str = "Hello",
    body: str = "Hello there",
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = ", ".join(to)
    if cc:
        m["Cc"] = ", ".join(cc)
    m["Subject"] = subject
    m["Date"] = format_datetime(datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))
    m["Message-ID"] = message_id or f"<m{next(_n)}.{id(m)}@test.example>"
    for k, v in (headers or {}).items():
        m[k] = v
    m.set_content(body)
    return m.as_bytes()


def data(name: str) -> bytes:
    return (DATA / name).read_bytes()

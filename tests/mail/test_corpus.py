"""Every public corpus message parses, within a time bound, into sane values."""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path

import pytest

from shared.mail import parse_message
from shared.mail.forwards import extract_forward
from shared.mail.identity import message_identity
from tests.mail.mail_helpers import corpus_messages, corpus_or_skip

MESSAGES = corpus_messages()


def test_corpus_present_or_skipped() -> None:
    corpus_or_skip()
    assert len(MESSAGES) >= 590  # 599 messages per SOURCES.md


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_corpus_message_parses(path: Path) -> None:
    raw = path.read_bytes()
    start = time.perf_counter()
    pm = parse_message(raw)
    fr = extract_forward(pm)
    ident = message_identity(pm)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    assert pm.raw == raw
    assert pm.kind in {"bounce", "list", "auto_reply", "calendar", "normal"}
    assert fr.status in {"not_forward", "extracted", "unreadable"}
    assert len(ident) == 64
    assert pm.date is None or pm.date.tzinfo is UTC
    for addr in (*pm.to, *pm.cc, *pm.bcc):
        assert addr.address == addr.address.lower() and "@" in addr.address
    assert len(pm.snippet) <= 201
    if pm.html is not None:
        assert "<script" not in pm.html.lower()

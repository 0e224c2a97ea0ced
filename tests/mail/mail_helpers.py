"""Paths and loaders shared by the mail tests (imported as a plain module by pytest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.mail import ParsedMessage, parse_message

DATA = Path(__file__).resolve().parents[1] / "data" / "mail"
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "public"
CRISP = CORPUS / "crisp-email-forward-parser" / "fixtures"


def corpus_or_skip() -> Path:
    if not CORPUS.is_dir():
        pytest.skip("the public mail corpus (../shared/corpus/public) is missing")
    return CORPUS


def corpus_messages() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file()
        and "crisp-email-forward-parser" not in p.parts
        and not p.name.startswith(("LICENSE", "README", "COPYING"))
        and p.suffix not in (".md", ".json")
    )


def load(name: str) -> ParsedMessage:
    return parse_message((DATA / name).read_bytes())

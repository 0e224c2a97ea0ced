"""Every message-text pattern moved to RE2 matches exactly as the ``re`` pattern it replaced.

``shared.mail.linear.compile`` records each pattern with its ``re`` source; here both engines
search the same strings — drawn from the pattern's own characters, Unicode spaces and digits,
so the rewritten ``\\s``/``\\d``/``\\w`` classes are exercised — and must agree on the match,
its span and every group.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Imported for the patterns they compile at import time.
import shared.mail.bounces
import shared.mail.classify
import shared.mail.forwards
import shared.mail.forwards.blockaddr
import shared.mail.quotes
import shared.mail.subjects  # noqa: F401
from shared.mail import linear

PATTERNS = [(source, flags, compiled) for source, flags, compiled in linear.COMPILED]
# Characters that matter to re vs RE2: Unicode spaces (\s), non-ASCII digits (\d) and letters
# (\w, case folding), line ends (^/$ with MULTILINE), and what mail puts in these fields.
EXTRA = " \t\n\r\x0b\x0c\x1c\x85\xa0\u2003\u3000１٣éÉſK:：;<>@.[]()*-_" + "aeiouAEIOU0123"


def _alphabet(source: str) -> str:
    letters = {c for c in source if c.isprintable() and c not in "\\"}
    return "".join(sorted(letters | set(EXTRA)))


def _outcome(m: re.Match[str] | linear.Match | None) -> object:
    if m is None:
        return None
    return (m.start(), m.end(), m.groups())


def test_every_converted_module_registered_its_patterns() -> None:
    assert len(PATTERNS) >= 20


@pytest.mark.parametrize(
    ("source", "flags", "compiled"), PATTERNS, ids=[p[0][:40] for p in PATTERNS]
)
def test_re2_pattern_matches_as_re_does(source: str, flags: int, compiled: linear.Pattern) -> None:
    reference = re.compile(source, flags)
    alphabet = _alphabet(source)
    # Whole words of the pattern too, so the alternatives actually match sometimes.
    words = sorted(set(re.findall(r"[^\W\d_]{2,}|[^\x00-\x7f]+", source)))
    pieces = st.one_of(st.text(alphabet=alphabet, max_size=4), st.sampled_from(words or ["x"]))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(pieces, max_size=12).map("".join))
    def agree(text: str) -> None:
        assert _outcome(compiled.search(text)) == _outcome(reference.search(text)), text
        assert _outcome(compiled.match(text)) == _outcome(reference.match(text)), text

    agree()


def test_translate_refuses_what_re2_cannot_run_alike() -> None:
    for pattern in (r"(a)\1", r"(?=x)", r"(?<!x)y", r"\bword", r"a$"):
        with pytest.raises(ValueError):
            linear.compile(pattern)
    assert linear.compile(r"a$", re.MULTILINE).search("a\nb") is not None

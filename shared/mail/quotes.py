"""Snippets: the new text of a message, with quoted history and signatures removed.

Recognizes the reply/forward markers of the common clients: "On … wrote:" (and its
localized forms, including Japanese "…さんは書きました:" / "…のメッセージ:"), "> " quoted lines,
Outlook's "-----Original Message-----" and "From: … Sent:" header blocks, the underscore
separator line, forwarded-message banners, and the "-- " signature delimiter (RFC 3676 §4.3).
"""

from __future__ import annotations

import re

from shared.mail import linear
from shared.mail.forwards.blocks import FORWARD_BANNER

SNIPPET_LENGTH = 200

# On RE2 (shared.mail.linear): "wrote" followed by 20,000 spaces costs a backtracking engine
# seconds per line. The lines matched are at most a snippet's worth (strip_quoted's bounds).
_CUT_LINE = linear.compile(
    r"(?:"
    r"-{2,}\s*(?:Original\s+Message|Forwarded\s+message|Weitergeleitete\s+Nachricht|"
    r"Message\s+transf[ée]r[ée]|Mensaje\s+reenviado|転送されたメッセージ|"
    r"メッセージを転送|元のメッセージ)\s*-{2,}"
    r"|_{10,}"
    r"|Begin\s+forwarded\s+message:"
    r"|(?:On|Am|Le|El|Il|Op)\s.{0,200}"
    r"(?:wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef)\s*:?"
    r"|.{0,200}(?:さんは書きました|のメッセージ|wrote)\s*[:：]"
    r"|(?:From|Von|De|差出人|送信元)\s*[:：].*"
    r")\s*\Z",
    re.IGNORECASE,
)
_HEADER_FOLLOW = linear.compile(
    r"^\s*\*?(?:Sent|Date|To|Subject|Gesendet|Datum|Envoyé|Enviado|"
    r"送信日時|日付|宛先|件名)\*?\s*[:：]",
    re.IGNORECASE,
)
_ON_START = linear.compile(r"^(?:On|Am|Le|El)\s", re.IGNORECASE)
_WROTE_END = linear.compile(r"(?:wrote|schrieb|a\s+écrit|escribió)\s*:?\s*\Z", re.IGNORECASE)


def strip_quoted(text: str, max_lines: int = 400, enough: int | None = None) -> str:
    """The message's own text: everything before the first quote/forward/signature marker.

    With ``enough``, stop once the kept lines hold that many non-space characters: the kept
    lines are always a prefix of the text, so a caller that needs only the start of the
    result (the snippet) gets the same start without scanning every line.
    """
    lines = text.splitlines()[:max_lines]
    kept: list[str] = []
    have = 0
    for i, line in enumerate(lines):
        stripped = line.strip().lstrip("\ufeff*").rstrip("*")
        if line.rstrip("\r") in ("-- ", "--") or line.startswith(">"):
            break
        if FORWARD_BANNER.match(stripped):
            break
        if stripped and _CUT_LINE.match(stripped):
            if stripped.lower().startswith(("from", "von", "de", "差出人", "送信元")):
                window = lines[i + 1 : i + 5]
                if not any(_HEADER_FOLLOW.match(w) for w in window):
                    kept.append(line)
                    continue
            break
        # "On <date>, <name>" on one line and "wrote:" on the next (Gmail wraps it).
        if _ON_START.match(stripped) and i + 1 < len(lines) and _WROTE_END.search(lines[i + 1]):
            break
        kept.append(line)
        if enough is not None:
            have += len("".join(line.split()))
            if have >= enough:
                break
    return "\n".join(kept).strip()


def make_snippet(text: str, length: int = SNIPPET_LENGTH) -> str:
    """About ``length`` characters of the new text, whitespace collapsed."""
    # +2: the collapsed prefix is then surely longer than ``length``, so the cut is the same.
    own = strip_quoted(text[:20000], enough=length + 2)
    snippet = " ".join(own.split())
    if len(snippet) > length:
        cut = snippet[:length]
        space = cut.rfind(" ")
        snippet = (cut[:space] if space > length * 0.7 else cut).rstrip() + "…"
    return snippet

"""Thread keys (spec §5): the normalized subject used to group team-inbox conversations.

Strips reply/forward prefixes in many languages (Re, RE, Fwd, Fw, FW, AW, WG, Antw, TR, RV,
SV, VS, 返信, 転送, 回复, 转发, Re[2], with ASCII or full-width colons) and list tags such as
``[Acme]``, repeatedly, then normalizes whitespace (including full-width spaces).
"""

from __future__ import annotations

import re
import unicodedata

_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|fw|aw|wg|antw|tr|rv|sv|vs|enc|odp|r|返信|転送|回复|转发|答复)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]|\[[^\[\]]*\]|【[^【】]*】)\s*",
    re.IGNORECASE,
)
_WS = re.compile(r"\s+")


def thread_subject(subject: str) -> str:
    """``"Re: [Acme] Fwd: 返信: 見積"`` → ``"見積"``."""
    text = _WS.sub(" ", subject.replace("\u3000", " ")).strip()
    for _ in range(50):
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    text = _WS.sub(" ", text).strip()
    return unicodedata.normalize("NFC", text)

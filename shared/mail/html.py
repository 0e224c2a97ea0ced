"""HTML bodies: sanitizing for display (nh3/ammonia) and deriving plain text.

Sanitizing removes scripts and other active content, every ``on*`` event handler and any
URL scheme outside the allow-list (so ``javascript:`` links go). Text derivation keeps
block structure as line breaks and drops style/script content.
"""

from __future__ import annotations

import html as _html
import re

import nh3

_URL_SCHEMES = {"http", "https", "mailto", "cid", "data", "tel"}
_BLOCK_BREAK = re.compile(
    r"<\s*(?:br|/p|/div|/tr|/li|/h[1-6]|/blockquote|/table|hr|p|div|tr|li|h[1-6])\b[^>]*>",
    re.IGNORECASE,
)
_CELL = re.compile(r"<\s*/t[dh]\s*>", re.IGNORECASE)
_DROP_BLOCKS = re.compile(
    r"<\s*(script|style|head|title)\b[^>]*>.*?<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"<[^>]*>")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_SPACES = re.compile(r"[ \t\u00a0\u200b\r\f\v]+")
_MANY_BREAKS = re.compile(r"\n\s*\n(\s*\n)+")


def sanitize_html(markup: str) -> str:
    """Sanitize untrusted HTML for display: no script, no on* handlers, no javascript: URLs."""
    try:
        return nh3.clean(markup, url_schemes=_URL_SCHEMES, link_rel="noopener noreferrer nofollow")
    except Exception:  # nh3 rejects some inputs (e.g. lone surrogates): fall back to text
        return _html.escape(html_to_text(markup))


def html_to_text(markup: str) -> str:
    """Readable plain text from HTML: tags dropped, entities decoded, blocks as line breaks."""
    text = _COMMENT.sub("", markup)
    text = _DROP_BLOCKS.sub(" ", text)
    text = _BLOCK_BREAK.sub("\n", text)
    text = _CELL.sub("\t", text)
    text = _TAG.sub("", text)
    text = _html.unescape(text)
    text = _SPACES.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return _MANY_BREAKS.sub("\n\n", text).strip()

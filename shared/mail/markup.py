"""HTML bodies: sanitizing for display (nh3/ammonia) and deriving plain text (Lexbor).

Sanitizing removes scripts and other active content, every ``on*`` event handler and any
URL scheme outside the allow-list (so ``javascript:`` links go). Text derivation parses with
Lexbor (selectolax), a parser that follows the HTML standard, and walks the tree without
recursion: block elements become line breaks, table cells end with a tab, and the contents of
script, style, head and title, and comments, are dropped.

Both parsers get the markup through :func:`shared.mail.htmlbound.bounded_markup` first, which
keeps their work linear in the size of the markup (they are quadratic on deep nesting and a
few other hostile shapes).
"""

from __future__ import annotations

import html as _html
import re

import nh3
from selectolax.lexbor import LexborHTMLParser, LexborNode

from shared.mail.htmlbound import bounded_markup

_URL_SCHEMES = {"http", "https", "mailto", "cid", "data", "tel"}
# A line break where these start; br and hr are empty, the others also break where they end.
_BREAK_AT_START = frozenset(
    {"br", "hr", "p", "div", "tr", "li", "blockquote", "table", "h1", "h2", "h3", "h4", "h5", "h6"}
)
_BREAK_AT_END = _BREAK_AT_START - {"br", "hr"}
_CELLS = frozenset({"td", "th"})  # a tab after each cell
_DROPPED = frozenset({"script", "style", "head", "title", "template"})
# One character class each (a single run or a fixed length): one pass, nothing to backtrack.
_SPACES = re.compile(r"[ \t\u00a0\u200b\r\f\v]+")
_MANY_BREAKS = re.compile(r"\n{3,}")


def sanitize_html(markup: str) -> str:
    """Sanitize untrusted HTML for display: no script, no on* handlers, no javascript: URLs."""
    try:
        return nh3.clean(
            bounded_markup(markup),
            url_schemes=_URL_SCHEMES,
            link_rel="noopener noreferrer nofollow",
        )
    except Exception:  # nh3 rejects some inputs (e.g. lone surrogates): fall back to text
        return _html.escape(html_to_text(markup))


def html_to_text(markup: str) -> str:
    """Readable plain text from HTML: tags dropped, entities decoded, blocks as line breaks."""
    bounded = bounded_markup(markup)
    try:
        root = LexborHTMLParser(bounded).root
    except UnicodeError:  # lone surrogates cannot be handed over as UTF-8: replace them
        root = LexborHTMLParser(bounded.encode("utf-8", "replace").decode("utf-8")).root
    text = "".join(_text_pieces(root)) if root is not None else ""
    text = _SPACES.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    # Lines are stripped, so a run of blank lines is a run of newlines.
    return _MANY_BREAKS.sub("\n\n", "\n".join(lines)).strip()


def _text_pieces(root: LexborNode) -> list[str]:
    """The text of the tree under ``root`` with block breaks, in document order.

    An iterative walk along child/next/parent links: a tree of any depth needs no stack.
    """
    out: list[str] = []
    root_id = root.mem_id
    node: LexborNode | None = root
    while node is not None:
        # Entering ``node``.
        child = None
        if node.is_text_node:
            out.append(node.text_content or "")
        elif node.is_element_node:
            tag = node.tag or ""
            if tag in _DROPPED:
                out.append(" ")
            else:
                if tag in _BREAK_AT_START:
                    out.append("\n")
                child = node.first_child
        if child is not None:
            node = child
            continue
        # Leaving ``node`` and every ancestor whose last child it is, up to a next sibling.
        while node is not None:
            if node.is_element_node:
                _leave(node.tag or "", out)
            if node.mem_id == root_id:
                node = None
                break
            sibling = node.next
            if sibling is not None:
                node = sibling
                break
            node = node.parent
    return out


def _leave(tag: str, out: list[str]) -> None:
    if tag in _BREAK_AT_END:
        out.append("\n")
    elif tag in _CELLS:
        out.append("\t")

"""Rewrite the links of a tracked copy's HTML and add its open pixel (spec §9 Tracking).

The recipient sees the sender's HTML, so the markup is spliced, never re-serialized: only the
value of each rewritten ``href`` changes (written double-quoted and escaped), and the pixel is
inserted before the last ``</body>`` end tag — or, without one, at the end of the input, or
just before a construct that the end of the input leaves open (an unterminated tag, comment,
``<script>``/``<textarea>``-like element or ``<plaintext>``), where markup would not be read
as markup.

Why a tokenizer of our own, and not a library (§6 Bounded work):

* ``html.parser.HTMLParser`` of the Python we run (3.11) is quadratic on hostile input:
  ``"<a " * 16_667`` (50 kB) takes 30 s, 100 kB two minutes (measured). It also does not
  know RCDATA (``<textarea>``, ``<title>``), ``--!>`` or ``<!-->``, and its behaviour changes
  between patch releases.
* selectolax (Lexbor) builds a tree — quadratic or worse on hostile input (see
  :mod:`shared.mail.htmlbound`) — and keeps no source offsets to splice at.

So this module follows the HTML standard's tokenizer (WHATWG §13.2.5) for what decides
where a link is: start and end tags with their attributes (quoted values may hold ``>``; the
first of duplicate attributes wins; a tag still open at the end of the input is no tag),
comments (ending at ``-->`` or ``--!>``; ``<!-->`` and ``<!--->`` are empty), bogus comments
and DOCTYPEs (to the next ``>``), raw-text elements (script, style, xmp, iframe, noembed,
noframes) and RCDATA (title, textarea) whose content is text up to their end tag, and
``<plaintext>``. Simplifications: script's escaped states (``<!--`` inside a script) are not
followed, and ``<style>``/``<script>`` inside ``<svg>``/``<math>`` are taken as raw text — a
link there is left untouched, never broken. Every pattern is anchored where it is tried and
possessive or atomic, and each ``find`` moves forward only, so the work is linear in the input.

An ``href`` is rewritten when its value, with character references decoded as the standard
decodes them in attributes (``&copy=1`` in a query stays as written), ASCII tab and newlines
removed and C0 controls and spaces trimmed (what the URL parser does), starts with the scheme
``http`` or ``https`` (any case); that cleaned URL is what ``link_url`` receives. ``<base>`` is
ignored: a relative link is not rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from html.entities import html5 as _ENTITIES

_TOKEN_START = re.compile(r"<[A-Za-z!?/]")
_ATTR_NAME = r"[^\t\n\f\r />][^\t\n\f\r /=>]*+"


def _attr_value(named: bool) -> str:
    """An attribute's ``=`` and value: double-quoted, single-quoted, unquoted or empty
    (``href=>``) — with named groups for the value, or without any group."""
    dq, sq, uq = ("?P<dq>", "?P<sq>", "?P<uq>") if named else ("?:", "?:", "?:")
    return (
        r"(?>[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"
        f'"({dq}[^"]*+)(?:"|\\Z)'
        f"|'({sq}[^']*+)(?:'|\\Z)"
        f"|({uq}[^\\t\\n\\f\\r >\"'][^\\t\\n\\f\\r >]*+)"
        r"|))?"
    )


_ATTRIBUTE = re.compile(f"(?P<name>{_ATTR_NAME}){_attr_value(named=True)}")
# A start or end tag from "<" to its ">", or to the end of the input (``close`` empty).
_TAG = re.compile(
    r"<(?P<end>/?)(?P<tag>[A-Za-z][^\t\n\f\r />]*+)"
    f"(?P<attrs>(?:[\\t\\n\\f\\r /]++|{_ATTR_NAME}{_attr_value(named=False)})*+)"
    r"(?P<close>>|\Z)"
)
_RAW_TEXT = ("script", "style", "xmp", "iframe", "noembed", "noframes", "title", "textarea")
# A literal prefix: each search is one forward scan.
_RAW_END = {
    name: re.compile(f"</{name}[\\t\\n\\f\\r />]", re.IGNORECASE | re.ASCII) for name in _RAW_TEXT
}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*+):")
_CHARREF = re.compile(
    r"&(?:#[xX](?P<hex>[0-9A-Fa-f]++);?|#(?P<dec>[0-9]++);?|(?P<name>[A-Za-z0-9]++)(?P<semi>;?))"
)
_LEGACY_MAX = max(len(k) for k in _ENTITIES if not k.endswith(";"))  # 6: "&frac12" and such
_URL_TRIM = "".join(map(chr, range(0x21)))  # C0 controls and space


@dataclass(frozen=True)
class _Href:
    start: int  # the value as written, quotes included
    end: int
    url: str


@dataclass(frozen=True)
class _Scan:
    hrefs: list[_Href]
    pixel_at: int


def links_of(html: str) -> list[str]:
    """The http(s) URLs :func:`rewrite_html` would pass to ``link_url``, in document order
    (an URL linked twice is listed twice)."""
    return [h.url for h in _scan(html).hrefs]


def rewrite_html(html: str, *, pixel_url: str, link_url: Callable[[str], str | None]) -> str:
    """``html`` with every http(s) ``<a href>`` replaced by ``link_url(url)`` (kept when it
    answers None) and the 1×1 pixel at ``pixel_url`` added (module docstring)."""
    scan = _scan(html)
    pixel = (
        f'<img src="{escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0">'
    )
    out: list[str] = []
    pos = 0
    pending = True  # the pixel is still to insert (at scan.pixel_at, never inside a link)
    for href in scan.hrefs:
        if pending and scan.pixel_at < href.start:
            out += [html[pos : scan.pixel_at], pixel]
            pos, pending = scan.pixel_at, False
        new = link_url(href.url)
        if new is not None:
            out += [html[pos : href.start], '"', escape(new, quote=True), '"']
            pos = href.end
    if pending:
        out += [html[pos : scan.pixel_at], pixel]
        pos = scan.pixel_at
    out.append(html[pos:])
    return "".join(out)


class _Finder:
    """``text.find(needle, pos)`` for increasing ``pos``, each character scanned once: many
    ``<!--`` ended by ``--!>`` must not each search the rest of the input for ``-->``."""

    __slots__ = ("at", "needle", "text")

    def __init__(self, text: str, needle: str) -> None:
        self.text, self.needle, self.at = text, needle, -1

    def next(self, pos: int) -> int:
        """The first occurrence at or after ``pos``, or ``len(text)``."""
        if self.at < pos:
            found = self.text.find(self.needle, pos)
            self.at = len(self.text) if found < 0 else found
        return self.at


def _scan(markup: str) -> _Scan:
    n = len(markup)
    hrefs: list[_Href] = []
    body_end = -1
    open_at = n  # where a construct left open by the end of the input starts
    comment_end, bang_end = _Finder(markup, "-->"), _Finder(markup, "--!>")
    pos = 0
    while (found := _TOKEN_START.search(markup, pos)) is not None:
        lt = found.start()
        c1, c2 = markup[lt + 1], markup[lt + 2 : lt + 3]
        if c1.isalpha() or (c1 == "/" and c2.isascii() and c2.isalpha()):
            tag = _TAG.match(markup, lt)
            assert tag is not None  # any "<" + letter (or "</" + letter) starts a tag
            if not tag.group("close"):
                open_at = lt
                break
            pos = tag.end()
            name = tag.group("tag").lower() if tag.group("tag").isascii() else ""
            if tag.group("end"):
                if name == "body":
                    body_end = lt
            elif name == "a":
                href = _href(markup, tag.start("attrs"), tag.end("attrs"))
                if href is not None:
                    hrefs.append(href)
            elif name == "plaintext":
                open_at = lt  # the rest of the input is text
                break
            elif name in _RAW_END:
                raw_end = _RAW_END[name].search(markup, pos)
                closing = _TAG.match(markup, raw_end.start()) if raw_end else None
                if closing is None or not closing.group("close"):
                    open_at = lt
                    break
                pos = closing.end()
        elif markup.startswith("<!--", lt):
            if markup.startswith(">", lt + 4) or markup.startswith("->", lt + 4):
                pos = markup.index(">", lt + 4) + 1  # "<!-->", "<!--->"
                continue
            end = min(comment_end.next(lt + 4), bang_end.next(lt + 4))
            if end == n:
                open_at = lt
                break
            pos = end + (3 if markup.startswith("-->", end) else 4)
        elif c1 == "/" and c2 == ">":
            pos = lt + 3  # "</>" is ignored
        elif c1 == "/" and not c2:
            break  # "</" at the very end is text
        else:
            # DOCTYPE, CDATA (a bogus comment in HTML), "<?", "</ x": all end at the next ">".
            end = markup.find(">", lt + 2)
            if end < 0:
                open_at = lt
                break
            pos = end + 1
    return _Scan(hrefs, body_end if body_end >= 0 else open_at)


def _href(markup: str, start: int, end: int) -> _Href | None:
    """The first ``href`` of the attributes at ``markup[start:end]``, when it is http(s)."""
    for attr in _ATTRIBUTE.finditer(markup, start, end):
        name = attr.group("name")
        if len(name) != 4 or not name.isascii() or name.lower() != "href":
            continue
        # Only the first: browsers ignore a later duplicate attribute, and so do we.
        for group, quotes in (("dq", 1), ("sq", 1), ("uq", 0)):
            value = attr.group(group)
            if value is not None:
                url = _clean_url(_decode_attribute(value))
                if not _is_http(url):
                    return None
                return _Href(attr.start(group) - quotes, attr.end(group) + quotes, url)
        return None  # "href" without a value
    return None


def _clean_url(value: str) -> str:
    """What the URL parser reads: ASCII tab and newlines dropped, C0 and spaces trimmed."""
    return value.replace("\t", "").replace("\n", "").replace("\r", "").strip(_URL_TRIM)


def _is_http(url: str) -> bool:
    scheme = _SCHEME.match(url)
    return scheme is not None and scheme.group(1).lower() in ("http", "https")


def _decode_attribute(value: str) -> str:
    """Character references decoded as in an attribute value (WHATWG §13.2.5.72-73): a
    legacy reference without ";" followed by "=" or an alphanumeric stays as written, so
    ``?a=1&copy=2`` keeps its ``&copy``. (``html.unescape`` decodes it, and raises on a
    numeric reference of more than 4300 digits.) NUL becomes U+FFFD as the tokenizer does."""
    value = value.replace("\0", "\ufffd")
    if "&" not in value:
        return value

    def decode(m: re.Match[str]) -> str:
        if m.group("hex") is not None:
            return _code_point(m.group("hex"), 16)
        if m.group("dec") is not None:
            return _code_point(m.group("dec"), 10)
        run, semi = m.group("name"), m.group("semi")
        if semi and run + ";" in _ENTITIES:
            return _ENTITIES[run + ";"]
        for k in range(min(len(run), _LEGACY_MAX), 1, -1):  # the longest legacy name
            if run[:k] in _ENTITIES:
                after = run[k] if k < len(run) else semi or value[m.end() : m.end() + 1]
                if after == "=" or (after.isascii() and after.isalnum()):
                    break
                return _ENTITIES[run[:k]] + run[k:] + semi
        return m.group(0)

    return _CHARREF.sub(decode, value)


def _code_point(digits: str, base: int) -> str:
    """A numeric character reference's character, with the standard's replacements."""
    digits = digits.lstrip("0") or "0"
    code = int(digits, base) if len(digits) <= 8 else 0x110000  # never a huge int()
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    if 0x80 <= code <= 0x9F:
        try:  # C1 controls: the windows-1252 character the standard maps them to
            return bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            return chr(code)
    return chr(code)

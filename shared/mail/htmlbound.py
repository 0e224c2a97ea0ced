"""Bound the work an HTML parser does on untrusted markup, before any parser sees it.

Tree construction as the HTML standard defines it is quadratic or worse on hostile input, in
every spec parser we use (Lexbor for text, html5ever inside nh3 for sanitizing): each tag walks
the stack of open elements, so 200,000 nested ``<div>`` cost minutes; ``<p><b id=N>x``
repeated makes the parser re-open every earlier ``<b>`` in every paragraph (quadratic time and
memory); thousands of attributes on one tag, or of character references in one text node, are
quadratic in Lexbor's attribute de-duplication and in html5ever's text nodes. Browsers cap the
nesting (Blink and WebKit at 512); these libraries do not.

:func:`bounded_markup` rewrites the markup in one left-to-right pass so that the parser gets a
*balanced* token stream of bounded nesting, which it builds in time linear in its length:

* every element the stream opens is closed by an explicit end tag, innermost first — the
  implied closes the standard would make (a ``<p>`` before a block, ``<li>`` after ``<li>``,
  table cells and rows, options) are written out, and an end tag that closes nothing open is
  dropped (the parser would ignore it; ``</p>`` and ``</br>``, which create elements, stay);
* at most :data:`MAX_DEPTH` elements are open at once and at most :data:`MAX_FORMATTING` of
  them are formatting elements (``<b>``, ``<font>``, ``<a>`` …, which the parser re-opens after
  an implied close); a start tag beyond either bound is dropped (a block-level one becomes
  ``<br>``, so the text keeps its line break);
* a tag with more than :data:`MAX_ATTRIBUTES` attributes, or more than :data:`MAX_REFERENCES`
  ampersands, loses its attributes; a text run gets an empty comment before every
  :data:`MAX_REFERENCES`-th ampersand (text nodes stay short for html5ever; the comment is
  dropped again by both the sanitizer and the text walk); comments are dropped.

Markup that stays within the bounds and is already balanced comes out with the same tags, so
the parsers build the same tree from it. Tokenizing follows the standard's tokenizer for tags
and attributes (quoted values may hold ``>``; a tag left open at the end swallows the rest, as
in a browser), raw-text elements (script, style, …) and RCDATA (title, textarea). Every pattern
used here is anchored where it is tried and possessive or atomic throughout, so each character
is examined a bounded number of times: no backtracking, no rescanning.
"""

from __future__ import annotations

import re

MAX_DEPTH = 256
MAX_FORMATTING = 16
MAX_ATTRIBUTES = 256
MAX_REFERENCES = 256
MAX_FOSTERED = 1024
_LONG_TAG = 1024  # attributes are counted only in a tag longer than this (bounded work)

_SPACE = "\t\n\f\r "
# A start or end tag from "<" to its ">" (or to the end of the input, where the standard's
# tokenizer drops it): the tag name, then attributes — a name, optionally "=" and a value that
# is double-quoted, single-quoted or unquoted. Possessive and atomic: no backtracking.
_ATTRIBUTE = (
    r"[^\t\n\f\r />][^\t\n\f\r /=>]*+"
    r"(?>[\t\n\f\r ]*+=[\t\n\f\r ]*+"
    r"(?:\"[^\"]*+(?:\"|\Z)|'[^']*+(?:'|\Z)|[^\t\n\f\r >\"'][^\t\n\f\r >]*+|))?"
)
_TAG = re.compile(
    r"<(/?)([A-Za-z][^\t\n\f\r />]*+)((?:[\t\n\f\r /]++|" + _ATTRIBUTE + r")*+)(>|\Z)"
)
_ATTRIBUTES = re.compile(_ATTRIBUTE)


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


VOID = _names(
    "area base basefont bgsound br col embed frame hr image img input keygen link meta param "
    "source track wbr"
)
# Start tags the tree builder merges into (or ignores for) elements it already has.
_NOT_PUSHED = frozenset({"html", "head", "body"})
_RAW_TEXT = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes"})
_RCDATA = frozenset({"title", "textarea"})
FORMATTING = _names("a b big code em font i nobr s small strike strong tt u")
# Elements that bound the scopes of the standard's "has an element in scope" checks (button
# scope included): an end tag does not close anything past one of these, except itself.
_MARKERS = _names(
    "applet button caption html marquee object table td template th "
    "foreignobject desc mi mo mn ms mtext annotation-xml"
)
_FOREIGN = frozenset({"svg", "math"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_CLOSES_P = _names(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr li dd dt listing main menu nav ol p "
    "plaintext pre search section summary ul xmp"
)
# The standard's "special" elements: an implied </li> (</dd>, </dt>) does not reach past them.
_SPECIAL = _names(
    "address applet area article aside base basefont bgsound blockquote body br button caption "
    "center col colgroup dd details dir div dl dt embed fieldset figcaption figure footer form "
    "frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input keygen li link "
    "listing main marquee menu meta nav noembed noframes noscript object ol p param plaintext "
    "pre script search section select source style summary table tbody td template textarea "
    "tfoot th thead title tr track ul wbr xmp"
)
_TABLE_SECTIONS = frozenset({"tbody", "thead", "tfoot"})
# Where content that is not table structure is "foster parented": moved before the table.
_TABLE_CONTEXT = _TABLE_SECTIONS | frozenset({"table", "tr"})
_NOT_FOSTERED = _TABLE_CONTEXT | _names("caption col colgroup td th style script template form")
# Dropped beyond the depth bound, these leave a <br> so the derived text keeps its lines.
_BLOCKISH = _CLOSES_P | _TABLE_SECTIONS | frozenset({"table", "tr", "td", "th", "caption"})


# Where a token other than text may start: "<" then a letter, "!", "?" or "/".
_TOKEN_START = re.compile(r"<[A-Za-z!?/]")
# The end tag of a raw-text or RCDATA element: "</name" then a space, "/" or ">". A literal
# prefix, so the search is one forward scan.
_RAW_END = {
    name: re.compile(f"</{name}[\\t\\n\\f\\r />]", re.IGNORECASE | re.ASCII)
    for name in _RAW_TEXT | _RCDATA
}


class _Finder:
    """``text.find(needle, pos)`` for increasing ``pos``: each character is scanned once."""

    __slots__ = ("at", "needle", "text")

    def __init__(self, text: str, needle: str) -> None:
        self.text, self.needle, self.at = text, needle, -2

    def next(self, pos: int) -> int:
        """The first occurrence at or after ``pos``, or ``len(text)``."""
        if self.at < pos:
            found = self.text.find(self.needle, pos)
            self.at = len(self.text) if found < 0 else found
        return self.at


class _Balancer:
    """The stack of open elements as the output stream leaves it, and the output."""

    __slots__ = ("foreign", "formatting", "fostered", "frames", "markers", "out", "stack")

    def __init__(self) -> None:
        self.out: list[str] = []
        self.stack: list[str] = []
        # One dict of name counts per scope frame; frames[-1] covers the elements above the
        # innermost marker. ``markers`` counts the open markers by name.
        self.frames: list[dict[str, int]] = [{}]
        self.markers: dict[str, int] = {}
        self.formatting = 0
        self.foreign = 0
        self.fostered = 0

    def foster(self) -> bool:
        """Whether content here is foster parented, and allowed: html5ever (in nh3) inserts it
        with a scan of the table's siblings, so many such insertions are quadratic."""
        if not self.stack or self.stack[-1] not in _TABLE_CONTEXT:
            return True
        self.fostered += 1
        return self.fostered <= MAX_FOSTERED

    def text(self, text: str) -> None:
        if text.strip(_SPACE) and not self.foster():
            return
        if text.count("&") <= MAX_REFERENCES:
            self.out.append(text)
            return
        # An empty comment every MAX_REFERENCES ampersands (before an "&", so no character
        # reference is split): html5ever copies a text node once per reference it appends.
        pieces = text.split("&")
        self.out.append(pieces[0])
        for i in range(1, len(pieces), MAX_REFERENCES):
            self.out.append("<!---->&" + "&".join(pieces[i : i + MAX_REFERENCES]))

    def push(self, name: str) -> None:
        self.stack.append(name)
        if name in _MARKERS:
            self.markers[name] = self.markers.get(name, 0) + 1
            self.frames.append({})
        else:
            frame = self.frames[-1]
            frame[name] = frame.get(name, 0) + 1
        if name in FORMATTING:
            self.formatting += 1
        elif name in _FOREIGN:
            self.foreign += 1

    def pop(self) -> str:
        name = self.stack.pop()
        if name in _MARKERS:
            self.markers[name] -= 1
            self.frames.pop()
        else:
            self.frames[-1][name] -= 1
        if name in FORMATTING:
            self.formatting -= 1
        elif name in _FOREIGN:
            self.foreign -= 1
        self.out.append(f"</{name}>")
        return name

    def in_frame(self, name: str) -> bool:
        return self.frames[-1].get(name, 0) > 0

    def close(self, name: str) -> None:
        """Close the innermost open ``name`` and everything above it (caller checked it is open)."""
        while self.pop() != name:
            pass

    def innermost_marker(self) -> str | None:
        for name in reversed(self.stack):  # bounded: stops at the first marker
            if name in _MARKERS:
                return name
        return None

    def close_list_item(self, names: frozenset[str]) -> None:
        """The implied end of an open ``li`` (or ``dd``/``dt``) before a new one."""
        for name in self.stack[-1:-9:-1]:  # a few levels: a deeper one is not implied
            if name in names:
                self.close(name)
                return
            if name in _SPECIAL and name not in ("address", "div", "p"):
                return

    def implied_ends(self, name: str) -> None:
        """Write out the end tags the standard implies before start tag ``name``."""
        if name in _CLOSES_P and self.in_frame("p"):
            self.close("p")
        if name in _HEADINGS and self.stack and self.stack[-1] in _HEADINGS:
            self.pop()
        elif name == "li":
            self.close_list_item(frozenset({"li"}))
        elif name in ("dd", "dt"):
            self.close_list_item(frozenset({"dd", "dt"}))
        elif name in ("td", "th", "tr") or name in _TABLE_SECTIONS:
            marker = self.innermost_marker()
            if marker in ("td", "th"):
                self.close(marker)
            if name != "td" and name != "th" and self.in_frame("tr"):
                self.close("tr")
            if name in _TABLE_SECTIONS:
                for section in _TABLE_SECTIONS:
                    if self.in_frame(section):
                        self.close(section)
        elif name == "table":
            if self.innermost_marker() == "table":
                self.close("table")
        elif name in ("option", "optgroup"):
            if self.stack and self.stack[-1] == "option":
                self.pop()
            if name == "optgroup" and self.stack and self.stack[-1] == "optgroup":
                self.pop()
        elif name in ("a", "nobr"):
            if self.in_frame(name):
                self.close(name)
        elif name == "button" and self.innermost_marker() == "button":
            self.close("button")

    def end_tag(self, name: str) -> None:
        if self.in_frame(name):
            self.close(name)
        elif name in _HEADINGS and any(self.in_frame(h) for h in _HEADINGS):
            while self.pop() not in _HEADINGS:
                pass
        elif name in _MARKERS and self.markers.get(name, 0) > 0:
            self.close(name)
        elif name in ("p", "br", "body", "html"):
            # </p> and </br> create elements; </body> and </html> change the insertion mode.
            # Written bare: the parser reads (and de-duplicates) an end tag's attributes too.
            self.out.append(f"</{name}>")
        # Anything else closes nothing open: the parser would ignore it, so it is dropped.


def bounded_markup(markup: str) -> str:
    """``markup`` rewritten as a balanced token stream within the bounds (module docstring)."""
    b = _Balancer()
    out = b.out
    n = len(markup)
    gt = _Finder(markup, ">")
    comment_end = _Finder(markup, "-->")
    comment_bang_end = _Finder(markup, "--!>")
    pos = 0
    while pos < n:
        found = _TOKEN_START.search(markup, pos)
        if found is None:
            b.text(markup[pos:])
            break
        lt = found.start()
        if lt > pos:
            b.text(markup[pos:lt])
        c1 = markup[lt + 1]
        c2 = markup[lt + 2 : lt + 3]
        if c1 not in "!?/" or (c1 == "/" and c2.isascii() and c2.isalpha()):
            m = _TAG.match(markup, lt)
            assert m is not None  # the pattern matches any "<" + letter: see _TAG
            pos = m.end()
            name = m.group(2).lower()
            if m.group(1):
                b.end_tag(name)
                continue
            token = _bounded_tag(m.group(0), name)
            if name in _RAW_TEXT or name in _RCDATA or name == "plaintext":
                if b.foreign:  # inside svg/math these are ordinary elements
                    _start_tag(b, name, token, m.group(3))
                    continue
                pos = _raw_text(b, markup, pos, name, token)
                continue
            _start_tag(b, name, token, m.group(3))
        elif markup.startswith("<!--", lt):
            # A comment ends at "-->" or "--!>"; "<!-->" and "<!--->" end at once. Dropped.
            if markup.startswith(">", lt + 4) or markup.startswith("->", lt + 4):
                pos = markup.find(">", lt + 4) + 1
                continue
            end = min(comment_end.next(lt + 4), comment_bang_end.next(lt + 4))
            pos = min(n, end + (3 if markup.startswith("-->", end) else 4))
        elif c1 == "/" and not c2:
            b.text("</")  # "</" at the very end is text
            pos = n
        else:
            # DOCTYPE, CDATA, processing instruction, "</>" or a bogus comment: to the next ">".
            end = min(n, gt.next(lt + 1) + 1)
            if c1 == "!" and markup[lt + 2 : lt + 9].lower() == "doctype":
                out.append(markup[lt:end])  # kept: it decides quirks mode, which parsing follows
            pos = end
    return "".join(out)


def _start_tag(b: _Balancer, name: str, token: str, attributes: str) -> None:
    if name in _NOT_PUSHED:
        b.out.append(token)
        return
    b.implied_ends(name)
    if name not in _NOT_FOSTERED and not b.foster():
        return
    if name in VOID or (b.foreign and attributes.rstrip(_SPACE).endswith("/")):
        b.out.append(token)  # an empty element (self-closing ones in foreign content too)
        return
    if len(b.stack) >= MAX_DEPTH or (name in FORMATTING and b.formatting >= MAX_FORMATTING):
        if name in _BLOCKISH:
            b.out.append("<br>")
        return
    b.out.append(token)
    b.push(name)


def _raw_text(b: _Balancer, markup: str, pos: int, name: str, token: str) -> int:
    """A raw-text or RCDATA element whole (not left open): start tag, text, end tag."""
    b.implied_ends(name)
    keep = name in _NOT_FOSTERED or b.foster()
    if name == "plaintext":  # the rest of the input is its text, read literally
        if keep:
            b.out.append(token + markup[pos:])
        return len(markup)
    m = _RAW_END[name].search(markup, pos)
    content_end = m.start() if m else len(markup)
    content = markup[pos:content_end]
    if name in _RCDATA and content.count("&") > MAX_REFERENCES:
        content = ""  # character references are decoded here; too many: the text goes
    if keep:
        b.out.append(token + content + f"</{name}>")
    if m is None:
        return len(markup)
    end = _TAG.match(markup, content_end)
    assert end is not None  # m found "</" + name: a tag
    return end.end()


def _bounded_tag(token: str, name: str) -> str:
    """The start tag as written, or bare when its attributes are too many for the parsers."""
    if len(token) <= _LONG_TAG:
        return token
    if token.count("&") > MAX_REFERENCES or len(_ATTRIBUTES.findall(token)) > MAX_ATTRIBUTES:
        return f"<{name}>"
    return token

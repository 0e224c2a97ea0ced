"""Regular expressions over message text on RE2, a linear-time engine (spec §6 Bounded work).

Python's ``re`` backtracks: an unanchored search that fails at every start, or two quantifiers
that can split the same run of characters, costs time quadratic (or worse) in the text. RE2
runs every search in time linear in the text, whatever the pattern.

:func:`compile` takes a pattern written for ``re`` with ``re``'s flags and returns an RE2
pattern that matches the same way: ``\\s``, ``\\d`` and ``\\w`` are Unicode-aware in ``re``
but ASCII in RE2, so they are rewritten to the classes ``re`` uses; ``\\Z`` becomes ``\\z``.
What RE2 cannot run (backreferences, lookaround, ``\\b``) is refused when the module is
imported. Two API notes: a ``str`` is encoded to UTF-8 on every call, so calling a pattern
repeatedly with increasing ``pos`` over one long text is quadratic again — iterate with
``finditer`` or match short pieces instead; and ``sub`` with many matches runs a Python
callback per match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

import re2


class Match(Protocol):
    """What our code uses of a ``re2`` match (the same as of an ``re.Match``)."""

    def group(self, group: int = 0, /) -> Any: ...  # str, or None for an unmatched group
    def groups(self) -> tuple[Any, ...]: ...
    def start(self, group: int = 0) -> int: ...
    def end(self, group: int = 0) -> int: ...


class Pattern(Protocol):
    """What our code uses of a compiled ``re2`` pattern (the same as of an ``re.Pattern``)."""

    def search(self, text: str) -> Match | None: ...
    def match(self, text: str) -> Match | None: ...
    def finditer(self, text: str) -> Iterator[Match]: ...
    def findall(self, text: str) -> list[Any]: ...
    def split(self, text: str) -> list[str]: ...
    def sub(self, repl: str | Callable[[Match], str], text: str, count: int = 0) -> str: ...


# The characters ``re``'s ``\s`` matches in a str pattern (those for which str.isspace()).
_SPACE_CHARS = (
    r"\t\n\v\f\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
    r"\x{205f}\x{3000}"
)
_WORD_CHARS = r"\p{L}\p{N}_"  # ``re``'s ``\w``: letters, numbers and the underscore
_OUTSIDE = {
    "s": f"[{_SPACE_CHARS}]",
    "S": f"[^{_SPACE_CHARS}]",
    "d": r"\p{Nd}",
    "D": r"\P{Nd}",
    "w": f"[{_WORD_CHARS}]",
    "W": f"[^{_WORD_CHARS}]",
    "Z": r"\z",
}
_INSIDE = {"s": _SPACE_CHARS, "d": r"\p{Nd}", "w": _WORD_CHARS}
_REFUSED = re.compile(r"\(\?[=!<]|\\[1-9bBG]")
# Every pattern compiled here, with the re source and flags it stands for: the tests check
# that each matches exactly as re would.
COMPILED: list[tuple[str, int, Pattern]] = []


def translate(pattern: str, multiline: bool = False) -> str:
    """``pattern`` (``re`` syntax) in RE2 syntax with ``re``'s Unicode classes."""
    if _REFUSED.search(pattern):
        raise ValueError(f"not an RE2 pattern: {pattern!r}")
    out: list[str] = []
    in_class = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            e = pattern[i + 1]
            table = _INSIDE if in_class else _OUTSIDE
            if e in table:
                out.append(table[e])
            elif in_class and e in "SDWZ":
                raise ValueError(f"negated class escape inside a set: {pattern!r}")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]" and not _class_start(pattern, i):
                in_class = False
        elif c == "[":
            in_class = True
        elif c == "$" and not multiline:
            # re's "$" also matches before a final newline; RE2's only at the very end.
            raise ValueError(f"'$' without MULTILINE differs in RE2 (use \\Z): {pattern!r}")
        out.append(c)
        i += 1
    return "".join(out)


def _class_start(pattern: str, i: int) -> bool:
    """A "]" right after "[" or "[^" is a literal, not the end of the set."""
    return pattern[i - 1] == "[" or (pattern[i - 1] == "^" and pattern[i - 2] == "[")


def compile(pattern: str, flags: int = 0) -> Pattern:
    """An RE2 pattern for ``pattern`` as ``re.compile(pattern, flags)`` reads it."""
    inline = ""
    if flags & re.IGNORECASE:
        inline += "i"
    if flags & re.MULTILINE:
        inline += "m"
    if flags & re.DOTALL:
        inline += "s"
    if flags & ~(re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE):
        raise ValueError("only IGNORECASE, MULTILINE and DOTALL are supported")
    text = translate(pattern, multiline=bool(flags & re.MULTILINE))
    if inline:
        text = f"(?{inline}){text}"
    options = re2.Options()
    options.log_errors = False
    compiled = cast(Pattern, re2.compile(text, options))
    COMPILED.append((pattern, flags, compiled))
    return compiled

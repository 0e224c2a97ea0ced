"""Addresses as clients print them inside inline forward blocks (not RFC 5322 headers).

Layouts seen in the wild: ``Name <addr>``, ``"Name" <addr>``, ``Name [mailto:addr]``,
``Name &lt;addr&gt;``, ``addr<mailto:addr>``, ``Name <addr<mailto:addr>>``,
``Name (addr)``, ``Last, First <addr>`` (unquoted comma), ``a; b`` separators, and
``X <x> on behalf of y``. A value with no address at all (just a name) yields nothing:
the caller must treat that From as unreadable rather than guess.

The patterns run on RE2 (:mod:`shared.mail.linear`): a field value is a line of the body, and
an address pattern searched over a long line of letters backtracks quadratically in ``re``.
"""

from __future__ import annotations

import html
import re

from shared.mail import linear
from shared.mail.addresses import normalize_address
from shared.mail.model import Address

_MAILTO_ANGLE = linear.compile(r"<mailto:[^<>]*>", re.IGNORECASE)
_MAILTO_SQUARE = linear.compile(r"\[mailto:([^\]\s]+)\]", re.IGNORECASE)
_PAREN_ADDR = linear.compile(r"\(\s*([^()\s]+@[^()\s]+)\s*\)")
_TOKEN = linear.compile(
    r"<\s*([^<>\s]+@[^<>\s]+?)\s*>"
    r"|([A-Za-z0-9._%+'!#$&*=?^`{|}~/-]+@[^\s<>,;:\"'()\[\]]+\.[^\s<>,;:\"'()\[\]]+)"
)
_SEPARATORS = " \t,;\"'«»“”‘’"
_ON_BEHALF = linear.compile(r"\s+on\s+behalf\s+of\s+.*\Z", re.IGNORECASE)


# A numeric character reference no character has (over 7 digits): html.unescape would turn
# thousands of digits into an int first, which Python refuses (ValueError) past 4,300.
_HUGE_REFERENCE = linear.compile(r"&#[xX]?[0-9a-fA-F]{8,};?")


def clean_value(value: str) -> str:
    if "&" in value:
        value = html.unescape(_HUGE_REFERENCE.sub("\ufffd", value))
    value = _MAILTO_ANGLE.sub("", value)
    value = _MAILTO_SQUARE.sub(r"<\1>", value)
    return _PAREN_ADDR.sub(r"<\1>", value)


def parse_block_addresses(value: str, limit: int = 200) -> tuple[Address, ...]:
    """All addresses of a block field value, in order, with their display names."""
    text = clean_value(value)
    out: list[Address] = []
    pos = 0
    pending_name = ""
    for m in _TOKEN.finditer(text):
        between = text[pos : m.start()]
        pos = m.end()
        if m.group(2) is not None:
            bare = m.group(2).strip("'")
            nxt = text[pos:].lstrip(" \t'\"")
            if nxt.startswith("<"):
                # "addr <addr>": the bare form is the display name of the next address.
                pending_name = between + bare
                continue
            out.append(Address(normalize_address(bare), None))
        else:
            name = _display_name(pending_name + between, m.group(1))
            pending_name = ""
            out.append(Address(normalize_address(m.group(1)), name))
        if len(out) >= limit:
            break
    return tuple(out)


def parse_block_from(value: str) -> Address | None:
    """The first address of a From value ("X on behalf of Y" → X), or None."""
    found = parse_block_addresses(_ON_BEHALF.sub("", clean_value(value)), limit=1)
    if not found:
        found = parse_block_addresses(value, limit=1)
    return found[0] if found else None


def _display_name(raw: str, address: str) -> str | None:
    name = raw.strip(_SEPARATORS).strip()
    name = name.strip(_SEPARATORS)
    if not name or ("@" in name and normalize_address(name) == normalize_address(address)):
        return None
    if "@" in name and name.strip("'\"") == address:
        return None
    return name or None

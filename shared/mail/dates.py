"""The Date header (RFC 5322 §3.3, including the obsolete forms of §4.3: two-digit years,
named zones such as ``EST``, missing seconds, comments). Always tz-aware UTC, or None —
never "now"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz

# Linear: from "(" to the first "(" or ")", no character is read twice.
_COMMENT = re.compile(r"\([^()]*\)")
_MAX_OFFSET = 24 * 3600
_EXTRA_ZONES = {
    "JST": 9 * 3600,
    "KST": 9 * 3600,
    "CET": 3600,
    "CEST": 7200,
    "BST": 3600,
    "EET": 7200,
    "EEST": 10800,
    "MEZ": 3600,
    "MESZ": 7200,
}


def parse_date(value: str | None) -> tuple[datetime | None, timedelta | None]:
    """Return ``(utc datetime, zone offset of the header)``; ``(None, None)`` if unparseable."""
    if not value:
        return None, None
    text = _COMMENT.sub(" ", value).strip()
    if not text or len(text) > 200:
        return None, None
    try:
        parts = parsedate_tz(text)
    except (ValueError, IndexError, TypeError, OverflowError):
        return None, None
    if parts is None:
        return None, None
    year, month, day, hour, minute, second = parts[:6]
    offset_seconds = parts[9]
    # "-0000" (unknown zone, RFC 5322 §3.3) and a missing zone are read as UTC.
    zone = text.rsplit(None, 1)[-1].upper()
    if zone in _EXTRA_ZONES:
        # RFC 5322 §4.3 reads unknown alphabetic zones as -0000; we honour the few that are
        # unambiguous and common in our mail (JST above all).
        offset_seconds = _EXTRA_ZONES[zone]
    if offset_seconds is None:
        offset_seconds = 0
    if abs(offset_seconds) >= _MAX_OFFSET:
        offset_seconds = 0
    if second == 60:  # leap second
        second = 59
    try:
        offset = timedelta(seconds=offset_seconds)
        local = datetime(year, month, day, hour, minute, second)
        return (local - offset).replace(tzinfo=UTC), offset
    except (ValueError, OverflowError):
        return None, None

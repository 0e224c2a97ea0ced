"""Dates as mail clients print them in inline forward blocks, in en/de/fr/es/ja.

Examples: "Wed, Oct 27, 2021 at 9:31 AM", "Monday, March 4, 2025 5:06 AM",
"2025年3月4日(火) 14:06", "4 mars 2025 à 05:06", "Mi., 27. Okt. 2021 um 09:31 Uhr",
"26 de octubre de 2021, 14:25:08 EEST", RFC 5322 dates. A date without a zone is read in
the ``default_offset`` given (the zone of the forward's own Date header, spec §4).
Ambiguous all-numeric dates such as 02/10/2023 are not guessed: they give None.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz

_MONTHS: dict[str, int] = {}
for _num, _names in enumerate(
    [
        "january jan januar janv janvier enero ene",
        "february feb februar févr fevr février fevrier febrero",
        "march mar märz maerz mär mars marzo",
        "april apr avril avr abril abr",
        "may mai mayo",
        "june jun juni juin junio",
        "july jul juli juil juillet julio",
        "august aug août aout agosto ago",
        "september sep sept septembre septiembre",
        "october oct okt oktober octobre octubre",
        "november nov novembre noviembre",
        "december dec dez dezember déc décembre decembre diciembre dic",
    ],
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _num

_ZONES = {
    "utc": 0,
    "gmt": 0,
    "z": 0,
    "ut": 0,
    "wet": 0,
    "bst": 60,
    "west": 60,
    "cet": 60,
    "mez": 60,
    "cest": 120,
    "mesz": 120,
    "eet": 120,
    "oez": 120,
    "eest": 180,
    "oesz": 180,
    "msk": 180,
    "ist": 330,
    "jst": 540,
    "kst": 540,
    "aest": 600,
    "aedt": 660,
    "est": -300,
    "edt": -240,
    "cst": -360,
    "cdt": -300,
    "mst": -420,
    "mdt": -360,
    "pst": -480,
    "pdt": -420,
    "akst": -540,
    "hst": -600,
}
# These run only on a value of at most 120 characters (parse_block_date): bounded work, and
# _NUM_DATE needs a backreference, which RE2 does not have.
_JA_DATE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_NUM_DATE = re.compile(r"\b(\d{1,2})([./])(\d{1,2})\2(\d{4}|\d{2})\b")
_TIME = re.compile(
    r"\b(\d{1,2})[:h](\d{2})(?::(\d{2}))?(?:\s*(a\.?m\.?|p\.?m\.?|午前|午後))?", re.IGNORECASE
)
_JA_AMPM = re.compile(r"(午前|午後)\s*(\d{1,2})[:時]")
_OFFSET = re.compile(r"(?:\b(?:utc|gmt)\s*)?([+-])(\d{1,2})(?::?(\d{2}))?\s*$|([+-])(\d{4})\b")
_UTC_OFFSET = re.compile(r"\b(?:utc|gmt)\s*([+-])(\d{1,2})(?::?(\d{2}))?\b")
_WORD = re.compile(r"[^\W\d_]+\.?")
_YEAR = re.compile(r"\b(19\d{2}|20\d{2}|21\d{2})\b")
_DAY = re.compile(r"\b(\d{1,2})\b")


def parse_block_date(value: str, default_offset: timedelta | None = None) -> datetime | None:
    """Parse a forward-block date to UTC, or None when it cannot be read reliably."""
    text = value.strip().lower().replace("\u202f", " ").replace("\u00a0", " ")
    if not text or len(text) > 120:
        return None
    rfc = _rfc5322(text)
    if rfc is not None:
        return rfc
    tmatch = _TIME.search(text)
    if tmatch is None:
        return None
    hour, minute = int(tmatch.group(1)), int(tmatch.group(2))
    second = int(tmatch.group(3) or 0)
    ampm = (tmatch.group(4) or "").replace(".", "")
    ja = _JA_AMPM.search(text)
    if ja:
        ampm = "pm" if ja.group(1) == "午後" else "am"
    if ampm in ("pm", "午後") and hour < 12:
        hour += 12
    elif ampm in ("am", "午前") and hour == 12:
        hour = 0
    date_part = text[: tmatch.start()] + " " + text[tmatch.end() :]
    ymd = _ymd(date_part)
    if ymd is None:
        return None
    offset = _zone(text[tmatch.end() :])
    if offset is None:
        offset = default_offset or timedelta(0)
    try:
        local = datetime(ymd[0], ymd[1], ymd[2], hour, minute, second)
        return (local - offset).replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _rfc5322(text: str) -> datetime | None:
    if not re.search(r"[+-]\d{4}\s*$", text) or "," not in text[:5]:
        return None
    parts = parsedate_tz(text)
    if parts is None or parts[9] is None:
        return None
    try:
        local = datetime(*parts[:6])
    except (ValueError, OverflowError):
        return None
    return (local - timedelta(seconds=parts[9])).replace(tzinfo=UTC)


def _ymd(text: str) -> tuple[int, int, int] | None:
    m = _JA_DATE.search(text)
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3))
    m = _ISO_DATE.search(text)
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3))
    m = _NUM_DATE.search(text)
    if m:
        a, sep, b, y = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        year = y + 2000 if y < 100 else y
        if sep == "." or a > 12:
            return year, b, a
        if b > 12:
            return year, a, b
        return None  # 02/10/2023: day-first or month-first? Never guess.
    found = [w.rstrip(".") for w in _WORD.findall(text) if w.rstrip(".") in _MONTHS]
    if len(found) > 1 and found[0] == "mar":  # "mar." is also Tuesday in fr/es
        found = found[1:]
    month = _MONTHS[found[0]] if found else None
    year_m = _YEAR.search(text)
    if month is None or year_m is None:
        return None
    rest = text[: year_m.start()] + " " + text[year_m.end() :]
    day_m = _DAY.search(rest)
    if day_m is None:
        return None
    return int(year_m.group(1)), month, int(day_m.group(1))


def _zone(text: str) -> timedelta | None:
    text = text.strip()
    m = _UTC_OFFSET.search(text)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        return timedelta(minutes=minutes if m.group(1) == "+" else -minutes)
    m = re.search(r"([+-])(\d{2})(\d{2})\b", text)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3))
        return timedelta(minutes=minutes if m.group(1) == "+" else -minutes)
    for word in re.findall(r"[a-z]+", text):
        if word in _ZONES:
            return timedelta(minutes=_ZONES[word])
    return None

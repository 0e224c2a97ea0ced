"""Classify a message's ``kind`` per §7: bounce > list > auto_reply > calendar > normal.

* bounce — RFC 3464 DSN, or a non-standard failure report from a daemon/no-reply sender with
  a failure subject (English or Japanese).
* list — ``List-Id`` (RFC 2919), or ``List-Unsubscribe`` (RFC 2369) with Precedence list/bulk.
* auto_reply — ``Auto-Submitted`` other than ``no`` (RFC 3834 §5), X-Autoreply/X-Autorespond,
  Precedence auto_reply/junk, Exchange's out-of-office header pair, or an auto-reply subject.
  The body is never looked at: a message that mentions "out of office" stays normal.
* calendar — a text/calendar part (RFC 5545/6047).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from shared.mail import linear
from shared.mail.bounces import BOUNCE_SUBJECT, is_daemon_sender
from shared.mail.model import Address

# On RE2 (shared.mail.linear): subjects and addresses are the sender's to choose.
_NOREPLY = linear.compile(
    r"no[-_.]?reply|do[-_.]?not[-_.]?reply|mailer[-_.]?daemon|^postmaster\Z|"
    r"^mail[-_.]?daemon\Z",
    re.IGNORECASE,
)
_AUTO_SUBJECT = linear.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?(?:out\s+of\s+(?:the\s+)?office|automatic\s+reply|auto:|"
    r"auto(?:matic)?[- ]?(?:reply|response|antwort)|autoreply|abwesenheit|"
    r"r[ée]ponse\s+automatique|respuesta\s+autom[aá]tica)"
    r"|自動応答|自動返信|不在通知|不在のお知らせ",
    re.IGNORECASE,
)
_EXCHANGE_OOF_PARTNERS = (
    "x-ms-exchange-inbox-rules-loop",
    "x-ms-exchange-generated-message-source",
    "x-ms-exchange-organization-autoreply",
)

HeaderGet = Callable[[str], tuple[str, ...]]


def is_noreply_address(addr: Address | None) -> bool:
    if addr is None:
        return False
    return bool(_NOREPLY.search(addr.address.partition("@")[0])) or is_daemon_sender(addr)


def is_bounce(dsn: bool, from_: Address | None, subject: str, get: HeaderGet) -> bool:
    if dsn:
        return True
    raw_from = " ".join(get("from"))
    if not (is_daemon_sender(from_, raw_from) or is_noreply_address(from_)):
        return False
    return bool(BOUNCE_SUBJECT.search(subject)) or bool(get("x-failed-recipients"))


def is_list(get: HeaderGet) -> bool:
    if get("list-id"):
        return True
    precedence = {p.strip().lower() for p in get("precedence")}
    return bool(get("list-unsubscribe")) and bool(precedence & {"list", "bulk"})


def is_auto_reply(subject: str, get: HeaderGet) -> bool:
    for value in get("auto-submitted"):
        if value.split(";", 1)[0].strip().lower() not in ("no", ""):
            return True
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if any(v.strip().lower() not in ("no", "false", "0") for v in get(name)):
            return True
    if {p.strip().lower() for p in get("precedence")} & {"auto_reply", "junk"}:
        return True
    if get("x-auto-response-suppress") and any(get(h) for h in _EXCHANGE_OOF_PARTNERS):
        return True
    return bool(_AUTO_SUBJECT.search(subject))


def classify(
    *, dsn: bool, from_: Address | None, subject: str, get: HeaderGet, has_calendar: bool
) -> str:
    if is_bounce(dsn, from_, subject, get):
        return "bounce"
    if is_list(get):
        return "list"
    if is_auto_reply(subject, get):
        return "auto_reply"
    if has_calendar:
        return "calendar"
    return "normal"

"""Every SMTP reply the gateway sends, with its enhanced status code (RFC 3463), in one place."""

from __future__ import annotations

import re

OK_MAIL = "250 2.1.0 Sender OK"
OK_RCPT = "250 2.1.5 Recipient OK"
OK_QUEUED = "250 2.0.0 Message accepted for logging"
NO_SUCH_ADDRESS = "550 5.1.1 No such intake address here (this server does not relay)"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
SENDER_NOT_ALLOWED = "550 5.7.1 Sender is not allowed to log mail to this address"
STORAGE_UNAVAILABLE = "451 4.3.0 Temporary storage failure, please retry later"
DIRECTORY_UNAVAILABLE = "451 4.3.0 Recipient directory unavailable, please retry later"
RATE_LIMITED = "421 4.7.0 Too many messages, slow down and retry later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address"
TOO_BIG = "552 5.3.4 Message too big for this system"

INTERNAL_ERROR = "451 4.3.0 Internal error, please retry later"

# aiosmtpd's own replies, rewritten with enhanced status codes (matched case-insensitively by
# prefix, first match wins). Every reply aiosmtpd 1.4 can send without one is listed; a 4xx/5xx
# that still slips through gets the class's "other" code (RFC 3463 X.0.0) from ``rewrite``.
REWRITES: tuple[tuple[str, str], ...] = (
    ("552 Error: Too much mail data", TOO_BIG),
    ("552 Error: message size exceeds", TOO_BIG),
    ("500 Error: line too long", "500 5.5.2 Line too long"),
    ("500 Line too long", "500 5.5.2 Line too long"),
    ("500 Command line too long", "500 5.5.2 Line too long"),
    ("500 Error: Bad syntax", "500 5.5.2 Syntax error"),
    ("500 Error: strict ASCII mode", "500 5.5.2 Syntax error: non-ASCII characters"),
    # The handler answers for exceptions itself (handle_exception); should that fail too,
    # aiosmtpd's last resort still never reaches the client as it is.
    ("500 Error: (", INTERNAL_ERROR),
    ("500 Error: Cannot describe error", INTERNAL_ERROR),
    ("500 Error: command", "500 5.5.1 Command unrecognized"),
    ("501 Syntax:", "501 5.5.4 Syntax error in parameters"),
    ("501 Error: BODY", "501 5.5.4 BODY can only be one of 7BIT, 8BITMIME"),
    ("501 Error: SMTPUTF8", "501 5.5.4 SMTPUTF8 takes no arguments"),
    ("501 Not enough value", "501 5.5.4 Syntax error in parameters"),
    ("501 Too many values", "501 5.5.4 Syntax error in parameters"),
    ("502 Could not VRFY", "502 5.5.1 Cannot VRFY this address"),
    ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
    ("503 Error: need MAIL command", "503 5.5.1 Need MAIL command first"),
    ("503 Error: need RCPT command", "503 5.5.1 Need RCPT command first"),
    ("503 Error: nested MAIL command", "503 5.5.1 Sender already given"),
    ("503 Error: send HELO first", "503 5.5.1 Send EHLO or HELO first"),
    ("503 Error: send EHLO first", "503 5.5.1 Send EHLO or HELO first"),
    ("503 Already authenticated", "503 5.5.1 Already authenticated"),
    ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
    ("554 Command refused due to lack of security", "554 5.7.0 Command refused: use STARTTLS"),
    ("555 MAIL FROM parameters", "555 5.5.4 MAIL FROM parameters not recognized"),
    ("555 RCPT TO parameters", "555 5.5.4 RCPT TO parameters not recognized"),
    ("454 TLS not available", "454 4.7.0 TLS not available"),
    ("421 Too many connections", TOO_MANY_CONNECTIONS),
)
_REWRITES = tuple((prefix.lower(), replacement) for prefix, replacement in REWRITES)
_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_ERROR = re.compile(r"^([45])\d\d([ -])")


def rewrite(status: str) -> str:
    """``status`` with an enhanced status code (RFC 3463) on every 4xx/5xx reply."""
    if not status.startswith(("4", "5")):
        return status  # most replies: nothing above applies to a 2xx or 3xx
    low = status.lower()
    for prefix, replacement in _REWRITES:
        if low.startswith(prefix):
            return replacement
    error = _ERROR.match(status)
    if error and not _ENHANCED.match(status):
        return f"{status[:4]}{error.group(1)}.0.0 {status[4:]}"
    return status

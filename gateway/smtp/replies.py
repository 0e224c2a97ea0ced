"""Every SMTP reply the gateway sends, with its enhanced status code (RFC 3463), in one place."""

from __future__ import annotations

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
SHUTTING_DOWN = "421 4.3.2 Service shutting down, please retry later"

# aiosmtpd's own replies, rewritten with enhanced status codes.
REWRITES: tuple[tuple[str, str], ...] = (
    ("552 Error: Too much mail data", TOO_BIG),
    ("552 Error: message size exceeds", TOO_BIG),
    ("500 Error: line too long", "500 5.5.2 Line too long"),
    ("500 Line too long", "500 5.5.2 Line too long"),
    ("500 Error: Bad syntax", "500 5.5.2 Syntax error"),
    ("500 Error: command", "500 5.5.1 Command unrecognized"),
    ("501 Syntax:", "501 5.5.4 Syntax error in parameters"),
    ("503 Error: need MAIL command", "503 5.5.1 Need MAIL command first"),
    ("503 Error: need RCPT command", "503 5.5.1 Need RCPT command first"),
    ("503 Error: nested MAIL command", "503 5.5.1 Sender already given"),
    ("503 Error: send HELO first", "503 5.5.1 Send EHLO or HELO first"),
    ("421 Too many connections", TOO_MANY_CONNECTIONS),
)


def rewrite(status: str) -> str:
    for prefix, replacement in REWRITES:
        if status.startswith(prefix):
            return replacement
    return status

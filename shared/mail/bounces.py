"""Delivery failure reports: RFC 3464 DSNs (multipart/report; report-type=delivery-status,
RFC 6522) and the non-standard reports of qmail, Exim, Exchange, Japanese carriers and others.

From a report we take the failed recipients (``Final-Recipient``/``Original-Recipient`` of
per-recipient blocks whose ``Action`` is ``failed``, RFC 3464 §2.3; else addresses named in
the human-readable text) and the Message-ID of the returned message (message/rfc822 or
text/rfc822-headers part, else a ``Message-ID:`` line quoted in the body).

Every pattern here runs on RE2 (:mod:`shared.mail.linear`): report fields and bodies are
attacker-controlled, and a backtracking search over a 1 MB ``Final-Recipient`` line or a body
of ``@`` and ``.`` is quadratic.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from shared.mail import linear
from shared.mail.addresses import normalize_address
from shared.mail.headers import header_bytes
from shared.mail.ids import clean_message_id
from shared.mail.internals import stored_payload
from shared.mail.mime import Leaf, decode_payload
from shared.mail.model import Address, BounceInfo

_DAEMON_LOCALS = frozenset(
    {
        "mailer-daemon",
        "postmaster",
        "mail-daemon",
        "mailerdaemon",
        "maildaemon",
        "mdaemon",
        "mailer_daemon",
        "bounce",
        "bounces",
        "mail.delivery.system",
    }
)
_DAEMON_NAMES = linear.compile(r"mail\s*delivery\s*(?:sub)?system|mailer[- ]daemon", re.IGNORECASE)
BOUNCE_SUBJECT = linear.compile(
    r"undeliver(?:ed|able)|returned\s+mail|mail\s+returned|returning\s+message|"
    r"delivery\s+(?:status\s+notification|failure|failed|has\s+failed|report|status|problem)|"
    r"mail\s+delivery\s+(?:failed|failure|status)|failure\s+notice|mail\s+system\s+error|"
    r"(?:message|mail)\s+(?:not\s+delivered|could\s+not\s+be\s+delivered|rejected)|"
    r"non[- ]?delivery|nondeliverable|delivery\s+notification|"
    r"配信不能|配信エラー|配送エラー|メールエラー|エラー通知|不達|未達|送信エラー|"
    r"(?:配信|送信|配達)できません|届きませんでした|届けられませんでした|返送",
    re.IGNORECASE,
)
_RECIPIENT_FIELD = linear.compile(
    r"^\s*(?:final|original)-recipient\s*:\s*(?:[^;]*;)?\s*(.+)$", re.IGNORECASE | re.MULTILINE
)
_MSGID_LINE = linear.compile(
    r"^\s*Message-ID\s*:\s*(<[^>\s]+>|\S+@\S+)", re.IGNORECASE | re.MULTILINE
)
_ADDR = linear.compile(
    r"<?([A-Za-z0-9._%+!#$&'*/=?^`{|}~-]+@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,})>?"
)
_ACTION = linear.compile(r"^\s*action\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_BLANK_LINE = linear.compile(r"\n\s*\n")
_ORIGINAL_MARKER = linear.compile(
    r"^(?:-+\s*(?:This is a copy|Below this line|Original message|The header|Returned message|"
    r"Original Message|元のメッセージ|送信メッセージ|Received:)|Received:|Return-Path:|"
    r"Content-Type: message/rfc822|-+ ?(?:Undelivered|Forwarded) message)",
    re.IGNORECASE | re.MULTILINE,
)


def is_daemon_sender(addr: Address | None, raw_from: str = "") -> bool:
    """A mailer-daemon/postmaster From (also ``MAILER-DAEMON <>`` which has no address)."""
    if raw_from and _DAEMON_NAMES.search(raw_from):
        return True
    if addr is None:
        return False
    local = addr.address.partition("@")[0]
    return local in _DAEMON_LOCALS or bool(addr.name and _DAEMON_NAMES.search(addr.name))


def is_dsn(root: Message) -> bool:
    """RFC 6522 multipart/report with report-type=delivery-status (RFC 3464)."""
    try:
        if root.get_content_type() != "multipart/report":
            return False
        return str(root.get_param("report-type", "")).lower().strip() in (
            "delivery-status",
            "global-delivery-status",
        )
    except Exception:  # malformed Content-Type parameters
        return False


def bounce_info(
    leaves: list[Leaf], text: str, own_addresses: set[str], defects: list[str]
) -> BounceInfo:
    """Failed recipients and the returned message's Message-ID, from parts then from text."""
    failed: list[str] = []
    message_id: str | None = None
    for leaf in leaves:
        ctype = leaf.content_type
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            failed.extend(_dsn_recipients(leaf, defects))
        elif ctype in ("message/rfc822", "message/global") and message_id is None:
            payload = stored_payload(leaf.part)
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                message_id = clean_message_id(payload[0].get("message-id"))
        elif ctype == "text/rfc822-headers" and message_id is None:
            headers = BytesParser(policy=compat32).parsebytes(
                decode_payload(leaf.part, defects), headersonly=True
            )
            message_id = clean_message_id(headers.get("message-id"))
    if message_id is None:
        m = _MSGID_LINE.search(text)
        if m:
            message_id = clean_message_id(m.group(1))
    if not failed:
        failed = _recipients_from_text(text, own_addresses)
    seen: dict[str, None] = {}
    for addr in failed:
        seen.setdefault(addr, None)
    return BounceInfo(message_id, tuple(seen)[:100])


def _dsn_recipients(leaf: Leaf, defects: list[str]) -> list[str]:
    payload = stored_payload(leaf.part)
    blocks: list[str] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append("".join(f"{k}: {v}\n" for k, v in block.items()))
    else:
        raw = header_bytes(payload) if isinstance(payload, str) else b""
        if str(leaf.part.get("content-transfer-encoding", "")).strip():
            raw = decode_payload(leaf.part, defects)
        blocks = _BLANK_LINE.split(raw.decode("utf-8", "replace"))
    out: list[str] = []
    for block in blocks:
        action = _ACTION.search(block)
        if action and action.group(1).lower() not in ("failed", "failure"):
            continue
        fields = _RECIPIENT_FIELD.findall(block)
        for value in fields[:1] if action else fields:
            m = _ADDR.search(value)
            if m:
                out.append(normalize_address(m.group(1)))
    return out


def _recipients_from_text(text: str, own: set[str]) -> list[str]:
    head = text[:20000]
    m = _ORIGINAL_MARKER.search(head)
    if m:
        head = head[: m.start()]
    out: list[str] = []
    for found in _ADDR.finditer(head):
        addr = normalize_address(found.group(1))
        local = addr.partition("@")[0]
        if addr in own or local in _DAEMON_LOCALS:
            continue
        out.append(addr)
    return out

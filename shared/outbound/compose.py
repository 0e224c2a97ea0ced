"""Building outbound mail once (§9): one Message-ID at the sender's domain, a Date, a text part
and — only when HTML is given — an HTML part, attachments; then the copies to deliver.

The copy logged is the message with its Bcc header (who it went to); no copy sent carries Bcc.
A tracked recipient gets their own copy whose HTML has their own pixel and links; everyone else
shares one untracked copy. Every copy has the same headers and Message-ID.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses

from shared.outbound.tracking_html import rewrite_html

MAX_TRACKED_URL = 2048  # longer links are not rewritten (they go out as written)
MAX_TRACKED_LINKS = 200  # links per copy that get a token of their own


class ComposeError(ValueError):
    """The request cannot be turned into a message; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Recipient:
    address: str  # lowercase
    name: str | None
    field: str  # to | cc | bcc


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class Draft:
    sender: str
    sender_name: str | None
    recipients: tuple[Recipient, ...]
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


def parse_recipients(values: Sequence[str], field_name: str) -> list[Recipient]:
    """``a@b.example`` or ``Name <a@b.example>``, each one address."""
    found: list[Recipient] = []
    for value in values:
        if any(ch in value for ch in "\r\n\x00"):
            raise ComposeError("an address contains a line break", field_name)
        pairs = getaddresses([value])
        if len(pairs) != 1 or "@" not in pairs[0][1]:
            raise ComposeError(f"not one address: {value[:80]!r}", field_name)
        name, address = pairs[0]
        local, _, domain = address.rpartition("@")
        if not local or "." not in domain or any(c in address for c in " <>,;"):
            raise ComposeError(f"not an address: {address[:80]!r}", field_name)
        found.append(Recipient(address.lower(), name or None, field_name))
    return found


def new_message_id(sender: str) -> str:
    """``<random@sender-domain>`` (without the brackets)."""
    domain = sender.rpartition("@")[2] or "localhost"
    return f"{secrets.token_hex(16)}@{domain}"


def build(draft: Draft, message_id: str, date: datetime) -> EmailMessage:
    """The message, with its Bcc header (the logged copy keeps it; no sent copy shows it)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _address(draft.sender, draft.sender_name)
    for name in ("to", "cc", "bcc"):
        people = [_address(r.address, r.name) for r in draft.recipients if r.field == name]
        if people:
            msg[name.capitalize()] = people
    msg["Subject"] = draft.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{message_id}>"
    if draft.in_reply_to:
        msg["In-Reply-To"] = f"<{draft.in_reply_to}>"
    if draft.references:
        msg["References"] = " ".join(f"<{r}>" for r in draft.references)
    msg["MIME-Version"] = "1.0"
    msg.set_content(draft.text or "")
    if draft.html is not None:
        msg.add_alternative(draft.html, subtype="html")
    for a in draft.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(
            a.content, maintype=maintype or "application", subtype=subtype or "octet-stream",
            filename=a.filename,
        )  # fmt: skip
    return msg


@dataclass(frozen=True)
class CopyPlan:
    recipients: tuple[str, ...]
    tracked: bool
    raw: bytes = field(repr=False)
    # Tracked copies: the open pixel's token and {token: url} of rewritten links.
    pixel: str | None = None
    links: dict[str, str] = field(default_factory=dict)


def render(
    draft: Draft,
    message_id: str,
    date: datetime,
    tracked: set[str],
    tracking_url: Callable[[str, str], str],
) -> tuple[bytes, list[CopyPlan]]:
    """The message as logged (with its Bcc header), and what is sent: one untracked copy for
    everyone not in ``tracked``, and one copy per tracked address with its own pixel and
    links (HTML only). ``tracking_url(kind, token)`` makes the URLs.

    The message is built once; each copy is that message without Bcc, with only its HTML
    part's content replaced — so every copy carries the same headers, byte for byte."""
    msg = build(draft, message_id, date)
    logged = msg.as_bytes()
    del msg["Bcc"]
    everyone = list(dict.fromkeys(r.address for r in draft.recipients))
    plans: list[CopyPlan] = []
    plain = [a for a in everyone if a not in tracked or draft.html is None]
    if plain:
        plans.append(CopyPlan(tuple(plain), False, msg.as_bytes()))
    if draft.html is None:
        return logged, plans
    html_part = msg.get_body(("html",))
    assert html_part is not None  # build() added it
    for address in (a for a in everyone if a in tracked):
        pixel = new_token()
        links: dict[str, str] = {}

        def link(url: str, links: dict[str, str] = links) -> str | None:
            if len(url) > MAX_TRACKED_URL or len(links) >= MAX_TRACKED_LINKS:
                return None  # left as written: a redirect target must stay a sane header
            token = new_token()
            links[token] = url
            return tracking_url("c", token)

        html = rewrite_html(draft.html, pixel_url=tracking_url("o", pixel), link_url=link)
        html_part.set_content(html, subtype="html")
        plans.append(CopyPlan((address,), True, msg.as_bytes(), pixel, links))
    return logged, plans


def new_token() -> str:
    """Opaque and unguessable (192 bits); the server maps it to what it stands for."""
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).decode("ascii")


def _address(address: str, name: str | None) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=name or "", username=local, domain=domain)

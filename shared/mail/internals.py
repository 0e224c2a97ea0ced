"""The two attributes of the stdlib's ``email.message.Message`` the parser works with directly:
the payload exactly as stored (under compat32, a str, or a list of sub-parts) and the raw
header list. The stdlib's own parser and generator use them the same way; typeshed does not
declare them, so they are reached through these typed accessors, in one place."""

from __future__ import annotations

from email.message import Message
from typing import Any


def stored_payload(part: Message) -> Any:
    """The payload as stored: a str, a list of sub-messages, or None."""
    return vars(part)["_payload"]


def set_stored_payload(part: Message, value: Any) -> None:
    vars(part)["_payload"] = value


def header_list(part: Message) -> list[tuple[str, Any]]:
    """The header fields as stored, in order (name, value)."""
    headers: list[tuple[str, Any]] = vars(part)["_headers"]
    return headers

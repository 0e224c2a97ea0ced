"""Message understanding for inboxlog: parse raw RFC 5322 bytes into one immutable value.

Public surface::

    from shared.mail import parse_message, ParsedMessage, Address, Attachment, BounceInfo

Everything here is pure (no database, no I/O besides the bytes given) and never raises on
any input bytes; problems are recorded in ``ParsedMessage.defects``.
"""

from shared.mail.model import Address, Attachment, BounceInfo
from shared.mail.parse import ParsedMessage, parse_message

__all__ = ["Address", "Attachment", "BounceInfo", "ParsedMessage", "parse_message"]

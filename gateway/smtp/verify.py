"""Sender verification for the account intake addresses (§6): known sender, DKIM, trusted A-R.

DKIM uses dkimpy; its DNS lookups go through an injectable ``dnsfunc`` so tests need no DNS.
Header text is the sender's: the patterns run on RE2, in time linear in the header block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import dkim
import re2

from shared.mail.addresses import parse_address, registrable_domain

log = logging.getLogger("inboxlog.gateway")

DnsFunc = Callable[..., bytes | None]


def _re2(pattern: str | bytes) -> Any:
    options = re2.Options()
    options.log_errors = False
    if isinstance(pattern, bytes):  # header bytes need not be UTF-8: one byte, one character
        options.encoding = re2.Options.Encoding.LATIN1
    return re2.compile(pattern, options)


_DKIM_SIGNATURE = _re2(rb"(?im)^dkim-signature[ \t\n\r\f\v]*:")
# Authentication-Results text arrives with its whitespace collapsed to single spaces. The
# character before the method stands in for re's Unicode \b (RE2's \b is ASCII only).
_RESULT = _re2(
    r"(?i)(?:^|[^\p{L}\p{N}_])(dkim|dmarc)\s*=\s*([\p{L}\p{N}_]+)"
    r"((?:\s+[\p{L}\p{N}_.]+\s*=\s*[^\s;]+)*)"
)
_HEADER_D = _re2(r"(?i)header\.d\s*=\s*([^\s;]+)")


def header_block(raw: bytes, limit: int = 65536) -> bytes:
    """The message up to its first empty line ending in LF (``\\n\\n`` or ``\\n\\r\\n``), at
    most ``limit`` bytes: the header parser, which stops at the first empty line of any line-end
    style, reads the same headers from it without splitting the body into lines."""
    head = raw[:limit]
    ends = [i for i in (head.find(b"\n\n"), head.find(b"\n\r\n")) if i >= 0]
    if not ends:
        return head
    end = min(ends)
    return head[: end + (2 if head[end + 1 : end + 2] == b"\n" else 3)]


def header_from(raw: bytes) -> str | None:
    """The normalized From address, from the header block only."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_block(raw))
    values = headers.get_all("From") or []
    if len(values) != 1:  # RFC 5322 allows exactly one From; anything else is not trusted
        return None
    addr = parse_address(str(values[0]))
    return addr.address if addr else None


def _aligned(signing_domain: str, from_domain: str) -> bool:
    """Relaxed alignment: same organizational domain (RFC 7489 §3.1.1)."""
    signing_domain, from_domain = signing_domain.lower().rstrip("."), from_domain.lower()
    if signing_domain == from_domain:
        return True
    return (registrable_domain(signing_domain) or signing_domain) == (
        registrable_domain(from_domain) or from_domain
    )


def dkim_pass(raw: bytes, from_domain: str, dnsfunc: DnsFunc | None = None) -> bool:
    """True when one DKIM signature verifies and its d= aligns with the From domain."""
    count = len(_DKIM_SIGNATURE.findall(raw[:262144]))
    for idx in range(count):
        verifier = dkim.DKIM(raw)
        try:
            ok = verifier.verify(idx=idx, dnsfunc=dnsfunc) if dnsfunc else verifier.verify(idx=idx)
        except dkim.DKIMException as exc:
            log.info("dkim signature %s invalid: %s", idx, type(exc).__name__)
            continue
        domain = (verifier.domain or b"").decode("ascii", "replace")
        if ok and _aligned(domain, from_domain):
            return True
    return False


def trusted_auth_results_pass(raw: bytes, from_domain: str, trusted: frozenset[str]) -> bool:
    """A dmarc=pass, or an aligned dkim=pass, in an Authentication-Results from a trusted id."""
    if not trusted:
        return False
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536])
    for value in headers.get_all("Authentication-Results") or []:
        text = " ".join(str(value).split())
        authserv = text.split(";", 1)[0].strip().split()[0].lower() if text else ""
        if authserv not in trusted:
            continue
        for method, result, props in _RESULT.findall(text):
            if result.lower() != "pass":
                continue
            if method.lower() == "dmarc":
                return True
            m = _HEADER_D.search(props)
            if m and _aligned(m.group(1), from_domain):
                return True
    return False

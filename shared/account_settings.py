"""The typed account settings of §4/§6 with their defaults, and never-log/internal matching."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.mail.addresses import normalize_address, normalize_domain


def normalize_never_log_entry(entry: str) -> str:
    """An entry is an address (``bob@example.com``) or a domain (``example.com``)."""
    entry = entry.strip()
    if not entry:
        raise ValueError("empty entry")
    if "@" in entry:
        local, _, domain = entry.rpartition("@")
        if not local or not domain or "." not in domain:
            raise ValueError(f"not an address or domain: {entry!r}")
        return normalize_address(entry)
    domain = normalize_domain(entry.lstrip("@").lstrip("."))
    if "." not in domain or " " in domain:
        raise ValueError(f"not an address or domain: {entry!r}")
    return domain


def _normalize_list(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        norm = normalize_never_log_entry(value)
        if norm not in out:
            out.append(norm)
    return out


class AccountSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    never_log: list[str] = Field(default_factory=list)
    internal_domains: list[str] = Field(default_factory=list)
    create_contacts: bool = True
    associate_companies: bool = True
    personal_logging: Literal["all", "replies_only"] = "all"
    sender_verification: Literal["known_sender", "dkim", "off"] = "known_sender"
    trusted_authserv_ids: list[str] = Field(default_factory=list)

    @field_validator("never_log")
    @classmethod
    def _never_log(cls, v: list[str]) -> list[str]:
        return _normalize_list(v)

    @field_validator("internal_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = _normalize_list(v)
        if any("@" in d for d in out):
            raise ValueError("internal_domains takes domains, not addresses")
        return out

    @field_validator("trusted_authserv_ids")
    @classmethod
    def _authserv(cls, v: list[str]) -> list[str]:
        return [x.strip().lower() for x in v if x.strip()]


def matches_address_or_domain(address: str, entries: list[str] | set[str]) -> bool:
    """True when ``address`` is listed, or its domain (or a parent domain) is listed."""
    if address in entries:
        return True
    domain = address.rpartition("@")[2]
    while domain:
        if domain in entries:
            return True
        _, dot, domain = domain.partition(".")
        if not dot:
            break
    return False

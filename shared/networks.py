"""Sets of IP networks given as comma-separated CIDRs in the configuration
(``INBOXLOG_SMTP_TRUSTED_PROXIES``, ``INBOXLOG_ALLOWED_PRIVATE_NETWORKS``, ...)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Networks:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Networks:
        """``"10.0.0.0/8, 127.0.0.1"`` → the networks; a bad entry raises ValueError."""
        out: list[Network] = []
        for entry in text.split(","):
            entry = entry.strip()
            if entry:
                try:
                    out.append(ipaddress.ip_network(entry, strict=False))
                except ValueError as exc:
                    raise ValueError(f"not an IP network (CIDR): {entry!r}") from exc
        return cls(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, address: str | Address) -> bool:
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 is 10.1.2.3
        return any(ip.version == n.version and ip in n for n in self.networks)

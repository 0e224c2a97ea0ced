"""Tell a tracking request that no person made from one that a person did (spec §9 Events).

:func:`machine_reason` answers the §9 reason of a machine open or click, or None for a human
one. Checks, in order (the first that fires gives the reason):

1. ``head_request`` — the method is HEAD: a browser following a link or loading an image
   sends GET; HEAD is a link checker's (Office's "Existence Discovery" probe is one).
2. ``prefetch`` — the request says it is speculative: ``Sec-Purpose: prefetch…`` (Chrome,
   also ``prefetch;prerender`` and ``prefetch;anonymous-client-ip`` from its private prefetch
   proxy), ``Purpose: prefetch`` (Safari, older Chrome), ``X-Moz: prefetch`` (Firefox link
   prefetching), ``X-Purpose: preview`` (Safari's Top Sites previews); ``Purpose`` and
   ``X-Purpose`` count with either value.
3. Image proxies, which fetch on the reader's behalf (some on delivery) and hide who and
   when: ``gmail_image_proxy`` — Gmail loads every image through its proxy (since December
   2013), whose user agent carries ``(via ggpht.com GoogleImageProxy)``;
   ``apple_privacy_proxy`` — Apple Mail's Mail Privacy Protection (iOS 15 / macOS 12 on)
   preloads remote content through Apple's relays, with the user agent reduced to exactly
   ``Mozilla/5.0`` (ua-parser/uap-core#509) or, from Apple's own network (17.0.0.0/8,
   2620:149::/32, 2403:300::/32, 2a01:b740::/32 — Apple's RIR allocations), Mail's bare
   WebKit user agent without any browser token. That bare WebKit agent alone proves
   nothing: Apple Mail without the protection, and Outlook for Mac, send it when a person
   opens the mail (warmbly/warmbly#564), so it counts only from Apple's addresses; MPP
   fetches that leave through other relays look like a person. Apple's proxy counts for
   opens only: it preloads images, it does not follow links.
4. ``scanner`` by timing (clicks only): within :data:`SCAN_AFTER_ACCEPT` of the upstream
   server's acceptance of the copy (or before it: gateways scan during the SMTP
   transaction) — no person has read the mail yet; or the click completes, within
   :data:`BURST_WINDOW`, a click on every link of a copy that has two or more (a person
   clicks one link, a sandbox detonates them all). :func:`scanner_burst` names the earlier
   clicks of that burst, which the caller should mark ``scanner`` too: when they arrived,
   the burst was not yet complete.
5. ``scanner`` by user agent (:data:`SCANNER_AGENTS`, :data:`SCANNER_AGENT_PREFIXES`, and a
   bare ``Mozilla/5.0`` on a click): agents that no person's browser or mail client sends.

Header values are the client's to choose and may be huge: only the first
:data:`HEADER_LOOKAHEAD` characters of a value are looked at, with substring tests (no
regular expression). Datetimes must be aware (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.networks import Networks

Reason = Literal["apple_privacy_proxy", "gmail_image_proxy", "prefetch", "head_request", "scanner"]

SCAN_AFTER_ACCEPT = timedelta(seconds=10)
BURST_WINDOW = timedelta(seconds=2)
HEADER_LOOKAHEAD = 512

APPLE_NETWORKS = Networks.parse("17.0.0.0/8, 2620:149::/32, 2403:300::/32, 2a01:b740::/32")
# Lower-cased substrings of the user agent, each an agent that fetches links by itself and
# that no person's browser sends (the threads cited are senders' logs of such clicks).
SCANNER_AGENTS = (
    "headlesschrome",  # Chrome run headless: the URL sandboxes of mail security gateways
    "bingpreview",  # Outlook.com link previews visit the links of mail (phpList/phplist3#415)
    "gmail-content-sampling",  # Gmail fetching a message's links (mssola/user_agent#71)
    "edge/12.246",  # EdgeHTML 12 (2015), extinct but for scanners (jdavidbakr/mail-tracker#255)
    "microsoft office existence discovery",  # Office probing a URL before opening it
    "microsoft office protocol discovery",
)
# User agents that start with an HTTP library's name: scripts, not people.
SCANNER_AGENT_PREFIXES = (
    "curl/",
    "wget/",
    "python-requests/",
    "python-urllib/",
    "go-http-client/",
    "libwww-perl/",
)
_BROWSER_TOKENS = ("safari/", "chrome/", "firefox/", "version/", "edg/", "crios/", "fxios/")


@dataclass(frozen=True)
class Hit:
    """One request for a pixel (``open``) or a tracked link (``click``)."""

    kind: Literal["open", "click"]
    method: str  # "GET" / "HEAD"
    headers: Mapping[str, str]  # lower-case names
    client_ip: str | None
    at: datetime  # aware UTC
    accepted_at: datetime | None  # when the upstream server accepted this recipient's copy
    url: str | None = None  # for clicks: the same key as CopyClicks.links (URL or token)

    def __post_init__(self) -> None:
        for value in (self.at, self.accepted_at):
            if value is not None and value.utcoffset() is None:
                raise ValueError("Hit datetimes must be timezone-aware")


@dataclass(frozen=True)
class CopyClicks:
    """What the caller knows about earlier clicks of the same copy (one recipient's)."""

    links: tuple[str, ...]  # every tracked link of the copy
    earlier: tuple[tuple[str, datetime], ...]  # (url, at) of earlier clicks (bounded by caller)


def machine_reason(hit: Hit, clicks: CopyClicks | None = None) -> Reason | None:
    """Why no person made ``hit``, or None when a person did (module docstring)."""
    if hit.method[:16].strip().upper() == "HEAD":
        return "head_request"
    if _is_prefetch(hit.headers):
        return "prefetch"
    agent = _header(hit.headers, "user-agent")
    if "googleimageproxy" in agent or "via ggpht.com" in agent:
        return "gmail_image_proxy"
    if hit.kind == "open" and _is_apple_proxy(agent, hit.client_ip):
        return "apple_privacy_proxy"
    if hit.kind == "click":
        if hit.accepted_at is not None and hit.at - hit.accepted_at <= SCAN_AFTER_ACCEPT:
            return "scanner"
        if clicks is not None and _burst(hit, clicks) is not None:
            return "scanner"
    if _is_scanner_agent(agent):
        return "scanner"
    return None


def scanner_burst(hit: Hit, clicks: CopyClicks) -> tuple[tuple[str, datetime], ...]:
    """The earlier clicks that ``hit`` completes into a click on every link of the copy
    within :data:`BURST_WINDOW` (all of them scanner clicks); empty when it completes none."""
    return _burst(hit, clicks) or ()


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, bounded, trimmed and lower-cased ("" when absent)."""
    return (headers.get(name) or "")[:HEADER_LOOKAHEAD].strip().lower()


def _first_token(value: str) -> str:
    return value.split(";", 1)[0].split(",", 1)[0].strip()


def _is_prefetch(headers: Mapping[str, str]) -> bool:
    if _first_token(_header(headers, "sec-purpose")) == "prefetch":
        return True
    if _first_token(_header(headers, "purpose")) in ("prefetch", "preview"):
        return True
    if _first_token(_header(headers, "x-purpose")) in ("prefetch", "preview"):
        return True
    return _first_token(_header(headers, "x-moz")) == "prefetch"


def _is_apple_proxy(agent: str, client_ip: str | None) -> bool:
    if agent == "mozilla/5.0":
        return True
    if client_ip is None or not APPLE_NETWORKS.contains(client_ip.strip()):
        return False
    return "applewebkit/" in agent and not any(t in agent for t in _BROWSER_TOKENS)


def _is_scanner_agent(agent: str) -> bool:
    # A bare "Mozilla/5.0" that is no Apple pixel fetch (a click, say) is no browser either.
    return (
        agent == "mozilla/5.0"
        or agent.startswith(SCANNER_AGENT_PREFIXES)
        or any(token in agent for token in SCANNER_AGENTS)
    )


def _burst(hit: Hit, clicks: CopyClicks) -> tuple[tuple[str, datetime], ...] | None:
    """The earlier clicks of a window of :data:`BURST_WINDOW` that holds ``hit`` and a click
    on every link of a copy of two links or more, or None when there is no such window."""
    links = set(clicks.links)
    if hit.kind != "click" or hit.url is None or hit.url not in links or len(links) < 2:
        return None
    # (time, is it the hit, url) near enough to share a window with the hit, oldest first;
    # an earlier click at the same instant sorts before the hit.
    near = [
        (at, False, url)
        for url, at in clicks.earlier
        if url in links and abs(at - hit.at) <= BURST_WINDOW
    ]
    events = sorted([*near, (hit.at, True, hit.url)])
    # Two pointers: a window opens at each click up to the hit and spans BURST_WINDOW.
    counts: dict[str, int] = {}
    end = 0
    for start, (opened_at, is_hit, link) in enumerate(events):
        while end < len(events) and events[end][0] - opened_at <= BURST_WINDOW:
            counts[events[end][2]] = counts.get(events[end][2], 0) + 1
            end += 1
        if len(counts) == len(links):
            return tuple((url, at) for at, this, url in events[start:end] if not this)
        if is_hit:
            return None  # later windows do not hold the hit
        counts[link] -= 1
        if not counts[link]:
            del counts[link]
    return None

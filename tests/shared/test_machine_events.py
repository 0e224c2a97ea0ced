"""Machine or human: the §9 reasons of tracking requests, from realistic header sets."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from shared.outbound.machine_events import CopyClicks, Hit, machine_reason, scanner_burst

ACCEPTED = datetime(2025, 3, 4, 9, 0, 0, tzinfo=UTC)
LATER = ACCEPTED + timedelta(minutes=42)

CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
FIREFOX_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
OUTLOOK_DESKTOP = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
# What Apple Mail (without Privacy Protection) and Outlook for Mac send when they load images.
BARE_WEBKIT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
EDGE_12_SCANNER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/42.0.2311.135 Safari/537.36 Edge/12.246"
)

BROWSER_HEADERS = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "accept-language": "en-GB,en;q=0.9",
    "accept-encoding": "gzip, deflate, br",
    "sec-fetch-dest": "document",
    "sec-fetch-mode": "navigate",
    "sec-fetch-site": "cross-site",
    "sec-fetch-user": "?1",
    "upgrade-insecure-requests": "1",
}
IMAGE_HEADERS = {"accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"}
RESIDENTIAL_V4 = "81.2.69.142"
RESIDENTIAL_V6 = "2a02:c7c:4d2e:9b00:1d4f:7e1a:3c9b:51f2"
APPLE_V4 = "17.58.101.12"
GOOGLE_V4 = "66.249.84.17"


def hit(
    kind: Literal["open", "click"],
    agent: str | None,
    *,
    ip: str | None = RESIDENTIAL_V4,
    method: str = "GET",
    at: datetime = LATER,
    accepted_at: datetime | None = ACCEPTED,
    url: str | None = None,
    extra: dict[str, str] | None = None,
) -> Hit:
    headers = dict(BROWSER_HEADERS if kind == "click" else IMAGE_HEADERS)
    if agent is not None:
        headers["user-agent"] = agent
    headers.update(extra or {})
    if kind == "click" and url is None:
        url = "https://shop.example/offer"
    return Hit(kind, method, headers, ip, at, accepted_at, url)


@pytest.mark.parametrize(
    ("agent", "ip"),
    [
        (CHROME_WIN, RESIDENTIAL_V4),
        (FIREFOX_MAC, RESIDENTIAL_V6),
        (SAFARI_IPHONE, APPLE_V4),  # a person on Apple's network, in Safari
        (OUTLOOK_DESKTOP, RESIDENTIAL_V4),
    ],
)
@pytest.mark.parametrize("kind", ["open", "click"])
def test_people_in_browsers_and_mail_clients_are_human(
    kind: Literal["open", "click"], agent: str, ip: str
) -> None:
    assert machine_reason(hit(kind, agent, ip=ip)) is None


def test_apple_mail_loading_images_itself_is_human_outside_apple_networks() -> None:
    # The bare WebKit agent is also what a person's Apple Mail or Outlook for Mac sends.
    assert machine_reason(hit("open", BARE_WEBKIT, ip=RESIDENTIAL_V4)) is None
    assert machine_reason(hit("open", BARE_WEBKIT, ip=None)) is None


@pytest.mark.parametrize("kind", ["open", "click"])
def test_head_requests(kind: Literal["open", "click"]) -> None:
    assert machine_reason(hit(kind, CHROME_WIN, method="HEAD")) == "head_request"
    assert machine_reason(hit(kind, CHROME_WIN, method="head")) == "head_request"
    office_probe = "Microsoft Office Existence Discovery"
    assert machine_reason(hit(kind, office_probe, method="HEAD")) == "head_request"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sec-purpose", "prefetch"),
        ("sec-purpose", "prefetch;prerender"),
        ("sec-purpose", "prefetch;anonymous-client-ip"),
        ("sec-purpose", " Prefetch "),
        ("purpose", "prefetch"),
        ("x-moz", "prefetch"),
        ("x-purpose", "preview"),
        ("x-purpose", "Preview"),
    ],
)
@pytest.mark.parametrize("kind", ["open", "click"])
def test_prefetches(kind: Literal["open", "click"], name: str, value: str) -> None:
    assert machine_reason(hit(kind, CHROME_WIN, extra={name: value})) == "prefetch"


def test_purpose_headers_that_are_not_prefetches() -> None:
    for name, value in (("sec-purpose", "prerendering"), ("purpose", "navigate"), ("x-moz", "")):
        assert machine_reason(hit("click", CHROME_WIN, extra={name: value})) is None, name


@pytest.mark.parametrize("kind", ["open", "click"])
def test_gmail_image_proxy(kind: Literal["open", "click"]) -> None:
    assert machine_reason(hit(kind, GMAIL_PROXY, ip=GOOGLE_V4)) == "gmail_image_proxy"
    assert machine_reason(hit(kind, "via ggpht.com", ip=None)) == "gmail_image_proxy"


@pytest.mark.parametrize(
    ("agent", "ip"),
    [
        ("Mozilla/5.0", APPLE_V4),
        ("Mozilla/5.0", "172.225.46.70"),  # MPP also leaves through other relays
        ("Mozilla/5.0", None),
        (BARE_WEBKIT, APPLE_V4),
        (BARE_WEBKIT, "::ffff:17.58.101.12"),
        (BARE_WEBKIT, "2620:149:a44:1100::1d"),
        (BARE_WEBKIT, "2a01:b740:a42:3::2"),
    ],
)
def test_apple_privacy_proxy_opens(agent: str, ip: str | None) -> None:
    assert machine_reason(hit("open", agent, ip=ip)) == "apple_privacy_proxy"


def test_apple_signals_on_a_click_are_no_apple_proxy() -> None:
    # MPP preloads images; it does not follow links. A bare "Mozilla/5.0" click is a scanner.
    assert machine_reason(hit("click", "Mozilla/5.0", ip=APPLE_V4)) == "scanner"
    assert machine_reason(hit("click", BARE_WEBKIT, ip=APPLE_V4)) is None


def test_clicks_soon_after_acceptance_are_scanners() -> None:
    for delay in (0.3, 4, 10):
        at = ACCEPTED + timedelta(seconds=delay)
        assert machine_reason(hit("click", CHROME_WIN, at=at)) == "scanner", delay
    # Before the acceptance: gateways scan during the SMTP transaction.
    before = ACCEPTED - timedelta(seconds=1)
    assert machine_reason(hit("click", CHROME_WIN, at=before)) == "scanner"
    after = ACCEPTED + timedelta(seconds=10.5)
    assert machine_reason(hit("click", CHROME_WIN, at=after)) is None
    # Unknown acceptance: no timing rule. Opens: never by this rule.
    soon = ACCEPTED + timedelta(seconds=2)
    assert machine_reason(hit("click", CHROME_WIN, at=soon, accepted_at=None)) is None
    assert machine_reason(hit("open", CHROME_WIN, at=soon)) is None


LINKS = ("https://a.example/", "https://b.example/", "https://c.example/")


def seconds(s: float) -> datetime:
    return LATER + timedelta(seconds=s)


def test_every_link_clicked_within_two_seconds_is_a_scanner() -> None:
    clicks = CopyClicks(LINKS, ((LINKS[0], seconds(0)), (LINKS[1], seconds(0.4))))
    last = hit("click", CHROME_WIN, url=LINKS[2], at=seconds(1.9))
    assert machine_reason(last, clicks) == "scanner"
    # The earlier clicks of the burst, for the caller to mark as scanner too.
    assert set(scanner_burst(last, clicks)) == {(LINKS[0], seconds(0)), (LINKS[1], seconds(0.4))}


def test_the_burst_window_is_two_seconds() -> None:
    clicks = CopyClicks(LINKS, ((LINKS[0], seconds(0)), (LINKS[1], seconds(1))))
    late = hit("click", CHROME_WIN, url=LINKS[2], at=seconds(2.5))
    assert machine_reason(late, clicks) is None
    assert scanner_burst(late, clicks) == ()
    # A later window that holds the hit can still complete the set.
    clicks = CopyClicks(
        LINKS, ((LINKS[0], seconds(0)), (LINKS[1], seconds(1)), (LINKS[0], seconds(1.2)))
    )
    assert machine_reason(late, clicks) == "scanner"
    assert set(scanner_burst(late, clicks)) == {(LINKS[1], seconds(1)), (LINKS[0], seconds(1.2))}


def test_bursts_that_are_not_every_link() -> None:
    now = hit("click", CHROME_WIN, url=LINKS[0], at=seconds(0.5))
    # The same link again and again is not every link.
    again = CopyClicks(LINKS, ((LINKS[0], seconds(0)), (LINKS[0], seconds(0.2))))
    assert machine_reason(now, again) is None
    # Clicks of links the copy does not have do not count.
    foreign = CopyClicks(LINKS, (("https://x.example/", seconds(0)), (LINKS[1], seconds(0.1))))
    assert machine_reason(now, foreign) is None
    # A copy with a single link: one click is every link, and a person does that.
    single = CopyClicks(LINKS[:1], ())
    assert machine_reason(now, single) is None
    # A burst long ago, then a person: the person is human.
    old = CopyClicks(LINKS, tuple((link, seconds(-300)) for link in LINKS))
    assert machine_reason(now, old) is None


def test_an_earlier_click_recorded_with_a_later_time_still_counts() -> None:
    clicks = CopyClicks(LINKS[:2], ((LINKS[1], seconds(0.3)),))  # clocks a little apart
    now = hit("click", CHROME_WIN, url=LINKS[0], at=seconds(0))
    assert machine_reason(now, clicks) == "scanner"
    # But the clicks around the hit must still fit in one window of two seconds.
    around = CopyClicks(LINKS, ((LINKS[0], seconds(-1.5)), (LINKS[2], seconds(1.5))))
    middle = hit("click", CHROME_WIN, url=LINKS[1], at=seconds(0))
    assert machine_reason(middle, around) is None


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/122.0.6261.94 Safari/537.36",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b",
        EDGE_12_SCANNER,
        EDGE_12_SCANNER + " Gmail-content-sampling",
        "Microsoft Office Existence Discovery",
        "Microsoft Office Protocol Discovery",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "Go-http-client/1.1",
        "Wget/1.21.4",
    ],
)
@pytest.mark.parametrize("kind", ["open", "click"])
def test_known_scanner_agents(kind: Literal["open", "click"], agent: str) -> None:
    assert machine_reason(hit(kind, agent)) == "scanner"


def test_checks_run_in_the_documented_order() -> None:
    """HEAD, then prefetch, then the proxies, then timing, then agents."""
    head_prefetch_proxy = hit("open", GMAIL_PROXY, method="HEAD", extra={"purpose": "prefetch"})
    assert machine_reason(head_prefetch_proxy) == "head_request"
    prefetch_apple = hit("open", "Mozilla/5.0", ip=APPLE_V4, extra={"x-moz": "prefetch"})
    assert machine_reason(prefetch_apple) == "prefetch"
    proxy_soon = hit("click", GMAIL_PROXY, at=ACCEPTED + timedelta(seconds=1))
    assert machine_reason(proxy_soon) == "gmail_image_proxy"
    assert machine_reason(hit("open", "Mozilla/5.0 via ggpht.com")) == "gmail_image_proxy"


def test_header_values_are_bounded() -> None:
    # Only the first 512 characters of a value are read: no scan of a megabyte of header.
    padded = "Mozilla/5.0 (" + "x" * 1_000_000 + ") GoogleImageProxy"
    start = time.perf_counter()
    assert machine_reason(hit("open", padded)) is None
    assert (
        machine_reason(hit("open", CHROME_WIN, extra={"sec-purpose": " " * 600 + "prefetch"}))
        is None
    )
    assert time.perf_counter() - start < 1.0
    assert machine_reason(hit("open", "x" * 400 + " GoogleImageProxy")) == "gmail_image_proxy"


def test_garbage_addresses_and_missing_agents_are_no_error() -> None:
    assert machine_reason(hit("open", None, ip="not-an-ip")) is None
    assert machine_reason(hit("open", BARE_WEBKIT, ip="17.0.0.999")) is None
    assert machine_reason(hit("click", "", ip="")) is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        hit("click", CHROME_WIN, at=datetime(2025, 3, 4, 9, 0, 5))
    with pytest.raises(ValueError):
        hit("click", CHROME_WIN, accepted_at=datetime(2025, 3, 4, 9, 0, 0))

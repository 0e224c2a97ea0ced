"""Over-long Message-IDs (spec §6): cut to 998 characters wherever an id is produced, so the
stored value and a later reply's reference to it agree, and the message is logged on both
databases (the columns hold 998)."""

from __future__ import annotations

from shared.mail import parse_message
from shared.mail.ids import MAX_ID_LENGTH, clean_message_id, parse_references
from tests.conftest import Api
from tests.support.pipeline import ingest

LONG_ID = "k" * 4000 + "@customer.example"


def mail(message_id: str, in_reply_to: str | None = None) -> bytes:
    # Written by hand: a generator would fold (or encode) the over-long header lines.
    refs = (
        f"In-Reply-To: <{in_reply_to}>\r\nReferences: <short@customer.example> <{in_reply_to}>\r\n"
        if in_reply_to
        else ""
    )
    return (
        "From: Bob <bob@ours.example>\r\nTo: ken@customer.example\r\nSubject: Quote\r\n"
        f"Date: Tue, 04 Mar 2025 05:06:07 +0000\r\nMessage-ID: <{message_id}>\r\n{refs}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHello Ken\r\n"
    ).encode()


def test_every_producer_cuts_an_id_the_same_way() -> None:
    cut = LONG_ID[:MAX_ID_LENGTH]
    assert MAX_ID_LENGTH == 998
    assert clean_message_id(f"<{LONG_ID}>") == cut
    assert parse_references(f"<a@b> <{LONG_ID}>") == ("a@b", cut)
    assert parse_references(LONG_ID) == (cut,)  # without brackets too
    original = parse_message(mail(LONG_ID))
    reply = parse_message(mail("reply@customer.example", in_reply_to=LONG_ID))
    assert original.message_id == cut
    assert reply.in_reply_to == original.message_id
    assert reply.references == ("short@customer.example", original.message_id)
    # A bounce reports the id it quotes the same way.
    bounce = (
        b"From: MAILER-DAEMON@mx.customer.example\r\nTo: bob@ours.example\r\n"
        b"Subject: Undelivered Mail\r\n\r\nfailed: ken@customer.example\r\n"
        b"Message-ID: <" + LONG_ID.encode() + b">\r\n"
    )
    pm = parse_message(bounce)
    assert pm.bounce is not None and pm.bounce.original_message_id == cut


def test_long_message_ids_are_stored_cut_and_found_by_the_reply(api: Api) -> None:
    acc = api.new_account("Acme", "alice@ours.example")
    bob = api.new_user(acc["token"], "bob@ours.example")
    account_id = acc["account"]["id"]
    first = ingest(api.ctx.sessions, account_id, "bcc", mail(LONG_ID))
    assert first.outcome == "logged" and first.email_id is not None
    reply = ingest(
        api.ctx.sessions, account_id, "bcc", mail("reply@ours.example", in_reply_to=LONG_ID)
    )
    assert reply.outcome == "logged" and reply.email_id is not None
    stored = api.call("GET", f"/v1/emails/{first.email_id}", bob["token"], 200)
    answer = api.call("GET", f"/v1/emails/{reply.email_id}", bob["token"], 200)
    assert stored["message_id"] == LONG_ID[:MAX_ID_LENGTH]
    assert answer["in_reply_to"] == stored["message_id"]
    assert answer["references"][-1] == stored["message_id"]

"""Forwarding intake end to end: the original is logged, the forwarder is not a contact."""

from __future__ import annotations

import pytest

from shared.mail import parse_message
from shared.mail.forwards import extract_forward
from shared.rules import codes as c
from tests.e2e.mail import data
from tests.support.stack import Stack, wait_for
from tests.support.world import new_world

LAYOUTS = [
    "forward_gmail_en.eml",
    "forward_gmail_ja.eml",
    "forward_outlook_old_en.eml",
    "forward_outlook_new_en.eml",
    "forward_outlook_ja.eml",
    "forward_outlook_ja_fullwidth.eml",
    "forward_apple_en.eml",
    "forward_apple_fr.eml",
    "forward_thunderbird_en.eml",
    "forward_yahoo_en.eml",
    "forward_outlook_de.eml",
    "forward_outlook_es.eml",
    "forward_attached_rfc822.eml",
    "forward_of_forward_gmail.eml",
]


@pytest.mark.parametrize("name", LAYOUTS)
def test_forward_logs_the_original_sender_not_the_forwarder(stack: Stack, name: str) -> None:
    world = new_world(stack.sessions, admin_email="hanako@ours.example")
    raw = data(name)
    original = extract_forward(parse_message(raw)).original
    assert original is not None and original.from_ is not None
    assert stack.send(raw, [world.forward], "hanako@ours.example") == {}
    [d] = wait_for(lambda: world.decisions(), 20)
    assert d.outcome == c.LOGGED, (d.outcome, d.codes)
    [email] = world.emails()
    assert email.from_address == original.from_.address != "hanako@ours.example"
    assert email.subject == original.subject
    assert email.forwarded_by_user_id == world.admin_id and email.direction == "incoming"
    contacts = world.contacts()
    assert original.from_.address in contacts and "hanako@ours.example" not in contacts
    assert contacts[original.from_.address].owner_id == world.admin_id


def test_unreadable_forward_fails_without_a_contact(stack: Stack) -> None:
    world = new_world(stack.sessions, admin_email="hanako@ours.example")
    stack.send(data("forward_unreadable_name_only.eml"), [world.forward], "hanako@ours.example")
    [d] = wait_for(lambda: world.decisions(), 20)
    assert (d.outcome, d.codes) == (c.FAILED, [c.UNPARSEABLE_FORWARD])
    assert world.contacts() == {} and world.emails() == []


def test_forward_from_a_non_user_is_refused_at_smtp(stack: Stack) -> None:
    import smtplib

    world = new_world(stack.sessions, admin_email="boss@ours.example")
    with pytest.raises(smtplib.SMTPDataError) as err:
        stack.send(data("forward_gmail_en.eml"), [world.forward], "hanako@ours.example")
    assert err.value.smtp_code == 550

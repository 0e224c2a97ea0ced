"""BCC intake end to end: real SMTP sessions, a real Celery worker, Redis and PostgreSQL."""

from __future__ import annotations

import smtplib

import pytest

from shared.rules import codes as c
from tests.e2e.mail import data, message
from tests.support.stack import Stack, wait_for
from tests.support.world import World, new_world


@pytest.fixture
def world(stack: Stack) -> World:
    return new_world(stack.sessions)


def done(world: World, n: int) -> list:
    return wait_for(lambda: (d := world.decisions()) and len(d) >= n and d, 20)


def test_bcc_to_two_external_recipients(stack: Stack, world: World) -> None:
    world.user("bob@ours.example")
    raw = message(
        "Alice <alice@ours.example>",
        ["Ken <ken@mail.acme.co.jp>", "Amy <amy@gmail.com>"],
        cc=["bob@ours.example"],
    )
    assert stack.send(raw, [world.bcc], "alice@ours.example") == {}
    [decision] = done(world, 1)
    assert decision.outcome == c.LOGGED and decision.codes == []
    assert {p["address"]: p["action"] for p in decision.participants} == {
        "ken@mail.acme.co.jp": c.ACT_CREATED,
        "amy@gmail.com": c.ACT_CREATED,
    }
    [email] = world.emails()
    assert email.direction == "outgoing" and email.logged_by_user_id == world.admin_id
    contacts = world.contacts()
    assert set(contacts) == {"ken@mail.acme.co.jp", "amy@gmail.com"}
    assert all(ct.owner_id == world.admin_id for ct in contacts.values())
    assert contacts["amy@gmail.com"].company_id is None  # free-mail makes no company
    with stack.sessions() as s:
        import sqlalchemy as sa

        from shared.db.models import Company, EmailCompany, EmailContact

        linked = set(
            s.scalars(sa.select(EmailContact.contact_id).where(EmailContact.email_id == email.id))
        )
        assert linked == {ct.id for ct in contacts.values()}
        company = s.get(Company, contacts["ken@mail.acme.co.jp"].company_id)
        assert company.domain == "acme.co.jp"
        assert list(
            s.scalars(sa.select(EmailCompany.company_id).where(EmailCompany.email_id == email.id))
        ) == [company.id]


def test_never_log_recipient_is_skipped_with_its_reason(stack: Stack, world: World) -> None:
    world.settings(never_log=["rival.example"])
    raw = message("alice@ours.example", ["spy@rival.example", "ken@acme.co.jp"])
    stack.send(raw, [world.bcc], "alice@ours.example")
    [d] = done(world, 1)
    assert d.outcome == c.LOGGED
    assert {p["address"]: (p["action"], p["reason"]) for p in d.participants} == {
        "spy@rival.example": (c.ACT_SKIPPED, c.R_NEVER_LOG),
        "ken@acme.co.jp": (c.ACT_CREATED, c.R_NEW_CONTACT),
    }
    assert "spy@rival.example" not in world.contacts()


def test_internal_only_is_skipped(stack: Stack, world: World) -> None:
    world.user("bob@ours.example")
    stack.send(
        message("alice@ours.example", ["bob@ours.example"]), [world.bcc], "alice@ours.example"
    )
    [d] = done(world, 1)
    assert (d.outcome, d.codes) == (c.SKIPPED, [c.INTERNAL_ONLY])
    assert world.emails() == [] and world.contacts() == {}


def test_unknown_sender_gets_550_5_7_1_and_nothing_is_stored(stack: Stack, world: World) -> None:
    with pytest.raises(smtplib.SMTPDataError) as err:
        stack.send(message("mallory@evil.example", ["ken@acme.co.jp"]), [world.bcc])
    assert err.value.smtp_code == 550 and err.value.smtp_error.startswith(b"5.7.1")
    assert world.stored() == []


def test_non_intake_recipient_is_550_5_1_1(stack: Stack, world: World) -> None:
    with stack.dialogue() as smtp:
        smtp.ehlo()
        smtp.mail("alice@ours.example")
        code, msg = smtp.rcpt("someone@elsewhere.example")
        assert (code, msg[:5]) == (550, b"5.1.1")
        code, msg = smtp.rcpt("nobody@log.localhost")
        assert (code, msg[:5]) == (550, b"5.1.1")
        assert smtp.rcpt(world.bcc)[0] == 250


def test_oversize_is_552_5_3_4(stack: Stack, world: World) -> None:
    with stack.dialogue() as smtp:
        code, _ = smtp.ehlo()
        assert "size" in smtp.esmtp_features and "smtputf8" in smtp.esmtp_features
        limit = int(smtp.esmtp_features["size"])
        code, msg = smtp.mail("alice@ours.example", [f"SIZE={limit + 1}"])
        assert (code, msg[:5]) == (552, b"5.3.4")


def test_same_message_twice_is_one_email_and_a_duplicate(stack: Stack, world: World) -> None:
    raw = message("alice@ours.example", ["ken@acme.co.jp"], message_id="<twice@test.example>")
    stack.send(raw, [world.bcc], "alice@ours.example")
    done(world, 1)
    stack.send(raw, [world.bcc], "alice@ours.example")
    first, second = done(world, 2)
    assert first.outcome == c.LOGGED and second.outcome == c.DUPLICATE
    assert second.email_id == first.email_id
    assert len(world.emails()) == 1 and len(world.contacts()) == 1


def test_log_false_still_logs_bcc(stack: Stack, world: World) -> None:
    world.user("quiet@ours.example", log=False)
    stack.send(message("quiet@ours.example", ["ken@acme.co.jp"]), [world.bcc], "quiet@ours.example")
    [d] = done(world, 1)
    assert d.outcome == c.LOGGED and d.acting_user_id == world.user_id("quiet@ours.example")


@pytest.mark.parametrize(
    "name", ["auto_reply_auto_submitted.eml", "bounce_dsn_postfix.eml", "list_list_id.eml"]
)
def test_automated_mail_never_creates_a_contact(stack: Stack, name: str) -> None:
    world = new_world(stack.sessions)
    world.settings(sender_verification="off")
    stack.send(data(name), [world.bcc])
    [d] = done(world, 1)
    assert d.outcome in (c.SKIPPED, c.REJECTED)
    assert world.contacts() == {}


def test_japanese_iso2022jp_bcc_is_decoded(stack: Stack, world: World) -> None:
    raw = data("charset_iso2022jp_cp932_ext.eml")
    from shared.mail import parse_message

    pm = parse_message(raw)
    world.user(pm.from_.address)
    stack.send(raw, [world.bcc], pm.from_.address)
    [d] = done(world, 1)
    [email] = world.emails()
    assert email.subject == pm.subject and "�" not in email.subject and d.subject == pm.subject

"""The §4 logging decision, sentence by sentence, without a database."""

from __future__ import annotations

import pytest

from shared.account_settings import AccountSettings
from shared.rules import codes as c
from shared.rules.logging_decision import AccountFacts, MessageFacts, Person, UserFacts, decide

ALICE = UserFacts(id=1, addresses=frozenset({"alice@ours.example", "alice.sales@ours.example"}))
BOB_OFF = UserFacts(
    id=2, addresses=frozenset({"bob@ours.example"}), log=False, never_log=("secret.example",)
)
GONE = UserFacts(id=3, addresses=frozenset({"gone@ours.example"}), active=False)
INTAKE = "log-abc@log.localhost"


def account(**settings: object) -> AccountFacts:
    users = (ALICE, BOB_OFF, GONE)
    internal = frozenset(a for u in users for a in u.addresses) | {INTAKE, "support@ours.example"}
    return AccountFacts(AccountSettings(**settings), users, internal)


def P(addr: str, name: str | None = None) -> Person:
    return Person(addr, name)


def actions(d) -> dict[str, tuple[str, str]]:
    return {p.address: (p.action, p.reason) for p in d.participants}


# --- bcc -------------------------------------------------------------------------------------


def test_bcc_logs_to_every_external_to_and_cc_as_outgoing_by_the_from_user() -> None:
    msg = MessageFacts(
        "bcc",
        P("alice@ours.example"),
        to=(P("ken@acme.co.jp"), P("bob@ours.example")),
        cc=(P("amy@gmail.com"),),
    )
    d = decide(msg, account())
    assert d.outcome == c.LOGGED and d.direction == "outgoing"
    assert d.acting_user_id == 1 and d.logged_by_user_id == 1
    assert actions(d) == {
        "ken@acme.co.jp": (c.ACT_CREATED, c.R_NEW_CONTACT),
        "amy@gmail.com": (c.ACT_CREATED, c.R_NEW_CONTACT),
    }


def test_bcc_acting_user_matches_a_personal_connected_address_too() -> None:
    msg = MessageFacts("bcc", P("alice.sales@ours.example"), to=(P("ken@acme.co.jp"),))
    assert decide(msg, account()).acting_user_id == 1


def test_bcc_existing_contact_is_logged_not_created() -> None:
    msg = MessageFacts(
        "bcc",
        P("alice@ours.example"),
        to=(P("ken@acme.co.jp"),),
        existing_contacts=frozenset({"ken@acme.co.jp"}),
    )
    assert actions(decide(msg, account())) == {
        "ken@acme.co.jp": (c.ACT_LOGGED, c.R_EXISTING_CONTACT)
    }


def test_bcc_logs_even_when_user_default_log_is_false() -> None:
    msg = MessageFacts("bcc", P("bob@ours.example"), to=(P("ken@acme.co.jp"),))
    d = decide(msg, account())
    assert d.outcome == c.LOGGED and d.acting_user_id == 2


@pytest.mark.parametrize("sender", ["stranger@else.example", "gone@ours.example", None])
def test_bcc_from_unknown_or_inactive_user_is_rejected(sender: str | None) -> None:
    msg = MessageFacts("bcc", P(sender) if sender else None, to=(P("ken@acme.co.jp"),))
    d = decide(msg, account())
    assert (d.outcome, d.codes) == (c.REJECTED, (c.UNKNOWN_SENDER,))


def test_bcc_never_log_account_and_user_entries_address_and_subdomain() -> None:
    acc = account(never_log=["boss@acme.co.jp"])
    msg = MessageFacts(
        "bcc",
        P("bob@ours.example"),
        to=(P("boss@acme.co.jp"), P("x@mail.secret.example"), P("ok@acme.co.jp")),
    )
    d = decide(msg, acc)
    assert actions(d) == {
        "boss@acme.co.jp": (c.ACT_SKIPPED, c.R_NEVER_LOG),
        "x@mail.secret.example": (c.ACT_SKIPPED, c.R_NEVER_LOG),
        "ok@acme.co.jp": (c.ACT_CREATED, c.R_NEW_CONTACT),
    }
    assert d.outcome == c.LOGGED


def test_bcc_all_never_log_is_skipped_never_log() -> None:
    msg = MessageFacts("bcc", P("alice@ours.example"), to=(P("boss@acme.co.jp"),))
    d = decide(msg, account(never_log=["acme.co.jp"]))
    assert (d.outcome, d.codes) == (c.SKIPPED, (c.NEVER_LOG,))


def test_internal_only_is_never_logged() -> None:
    msg = MessageFacts(
        "bcc", P("alice@ours.example"), to=(P("bob@ours.example"), P("x@team.ours.example"))
    )
    d = decide(msg, account(internal_domains=["ours.example"]))
    assert (d.outcome, d.codes, d.participants) == (c.SKIPPED, (c.INTERNAL_ONLY,), ())


def test_intake_and_team_addresses_are_internal() -> None:
    msg = MessageFacts("bcc", P("alice@ours.example"), to=(P(INTAKE), P("support@ours.example")))
    assert decide(msg, account()).codes == (c.INTERNAL_ONLY,)


@pytest.mark.parametrize(
    "kind,code", [("auto_reply", c.AUTO_REPLY), ("bounce", c.BOUNCE), ("list", c.LIST)]
)
def test_automated_mail_never_creates_contacts(kind: str, code: str) -> None:
    msg = MessageFacts("bcc", P("alice@ours.example"), to=(P("ken@acme.co.jp"),), kind=kind)
    d = decide(msg, account())
    assert (d.outcome, d.codes) == (c.SKIPPED, (code,))
    assert actions(d) == {"ken@acme.co.jp": (c.ACT_SKIPPED, c.R_AUTOMATED)}
    # ...but an existing contact still gets it on the timeline.
    msg2 = MessageFacts(
        "bcc",
        P("alice@ours.example"),
        to=(P("ken@acme.co.jp"),),
        kind=kind,
        existing_contacts=frozenset({"ken@acme.co.jp"}),
    )
    assert decide(msg2, account()).outcome == c.LOGGED


def test_calendar_mail_is_not_automated() -> None:
    msg = MessageFacts("bcc", P("alice@ours.example"), to=(P("ken@acme.co.jp"),), kind="calendar")
    assert decide(msg, account()).contacts_to_create == ("ken@acme.co.jp",)


def test_noreply_addresses_never_become_contacts() -> None:
    msg = MessageFacts(
        "bcc",
        P("alice@ours.example"),
        to=(P("no-reply@acme.co.jp"),),
        noreply_addresses=frozenset({"no-reply@acme.co.jp"}),
    )
    d = decide(msg, account())
    assert (d.outcome, d.codes) == (c.SKIPPED, (c.NO_CONTACTS,))
    assert actions(d) == {"no-reply@acme.co.jp": (c.ACT_SKIPPED, c.R_NOREPLY)}


def test_create_contacts_off_logs_only_existing_contacts() -> None:
    msg = MessageFacts(
        "bcc",
        P("alice@ours.example"),
        to=(P("new@acme.co.jp"), P("old@acme.co.jp")),
        existing_contacts=frozenset({"old@acme.co.jp"}),
    )
    d = decide(msg, account(create_contacts=False))
    assert actions(d) == {
        "new@acme.co.jp": (c.ACT_SKIPPED, c.R_CONTACTS_DISABLED),
        "old@acme.co.jp": (c.ACT_LOGGED, c.R_EXISTING_CONTACT),
    }


# --- forward ---------------------------------------------------------------------------------


def test_forward_logs_the_original_sender_not_the_forwarder() -> None:
    msg = MessageFacts(
        "forward",
        P("ken@acme.co.jp", "Ken"),
        to=(P("alice@ours.example"),),
        cc=(P("amy@acme.co.jp"),),
        requester=P("alice@ours.example"),
        forward_status="extracted",
    )
    d = decide(msg, account())
    assert d.outcome == c.LOGGED and d.direction == "incoming" and d.acting_user_id == 1
    assert d.contacts_to_create == ("ken@acme.co.jp", "amy@acme.co.jp")
    assert "alice@ours.example" not in actions(d)


def test_forward_of_own_sent_mail_is_outgoing() -> None:
    msg = MessageFacts(
        "forward",
        P("alice@ours.example"),
        to=(P("ken@acme.co.jp"),),
        requester=P("alice@ours.example"),
        forward_status="extracted",
    )
    d = decide(msg, account())
    assert d.direction == "outgoing" and d.contacts_to_create == ("ken@acme.co.jp",)


@pytest.mark.parametrize("status", ["unreadable", "not_forward"])
def test_unreadable_forward_fails_and_creates_no_contact(status: str) -> None:
    msg = MessageFacts("forward", None, requester=P("alice@ours.example"), forward_status=status)
    d = decide(msg, account())
    assert (d.outcome, d.codes, d.participants) == (c.FAILED, (c.UNPARSEABLE_FORWARD,), ())


def test_forward_from_unknown_user_is_rejected() -> None:
    msg = MessageFacts(
        "forward", P("ken@acme.co.jp"), requester=P("x@else.example"), forward_status="extracted"
    )
    assert decide(msg, account()).codes == (c.UNKNOWN_SENDER,)


def test_forward_uses_the_forwarders_never_log() -> None:
    msg = MessageFacts(
        "forward",
        P("v@secret.example"),
        to=(P("bob@ours.example"),),
        requester=P("bob@ours.example"),
        forward_status="extracted",
    )
    assert decide(msg, account()).codes == (c.NEVER_LOG,)


# --- team ------------------------------------------------------------------------------------


def test_team_incoming_is_kept_and_creates_contacts() -> None:
    msg = MessageFacts("team", P("ken@acme.co.jp"), to=(P("support@ours.example"),))
    d = decide(msg, account())
    assert d.outcome == c.LOGGED and d.keep_in_conversation and d.direction == "incoming"
    assert d.contacts_to_create == ("ken@acme.co.jp",) and d.logged_by_user_id is None


def test_team_sent_folder_reply_is_outgoing_attributed_to_sender_then_from() -> None:
    msg = MessageFacts(
        "team",
        P("support@ours.example"),
        sender=P("alice@ours.example"),
        to=(P("ken@acme.co.jp"),),
        in_sent_folder=True,
    )
    d = decide(msg, account())
    assert d.direction == "outgoing" and d.logged_by_user_id == 1
    msg2 = MessageFacts("team", P("alice@ours.example"), to=(P("ken@acme.co.jp"),))
    d2 = decide(msg2, account())
    assert d2.direction == "outgoing" and d2.logged_by_user_id == 1


def test_team_automated_and_never_log_mail_still_shown_in_conversation() -> None:
    auto = MessageFacts(
        "team", P("ken@acme.co.jp"), to=(P("support@ours.example"),), kind="auto_reply"
    )
    d = decide(auto, account())
    assert d.outcome == c.LOGGED and d.keep_in_conversation and d.contacts_to_create == ()
    assert d.codes == (c.AUTO_REPLY,)
    nl = MessageFacts("team", P("ken@acme.co.jp"), to=(P("support@ours.example"),))
    d = decide(nl, account(never_log=["acme.co.jp"]))
    assert d.outcome == c.LOGGED and d.codes == (c.NEVER_LOG,) and d.contacts_to_log == ()


def test_team_skip_rule_keeps_it_out() -> None:
    msg = MessageFacts("team", P("ken@acme.co.jp"), skipped_by_rule=True)
    d = decide(msg, account())
    assert (d.outcome, d.codes, d.keep_in_conversation) == (c.SKIPPED, (c.SKIPPED_BY_RULE,), False)


# --- personal --------------------------------------------------------------------------------


def test_personal_logging_off_keeps_nothing() -> None:
    msg = MessageFacts(
        "personal",
        P("ken@acme.co.jp"),
        to=(P("bob@ours.example"),),
        owner_id=2,
        existing_contacts=frozenset({"ken@acme.co.jp"}),
    )
    d = decide(msg, account())
    assert (d.outcome, d.codes, d.redact, d.participants) == (c.SKIPPED, (c.LOGGING_OFF,), True, ())
    assert d.private_to_user_id == 2


def test_personal_logs_only_existing_contacts_and_never_creates() -> None:
    msg = MessageFacts(
        "personal",
        P("ken@acme.co.jp"),
        to=(P("alice@ours.example"),),
        cc=(P("new@acme.co.jp"),),
        owner_id=1,
        existing_contacts=frozenset({"ken@acme.co.jp"}),
    )
    d = decide(msg, account())
    assert d.outcome == c.LOGGED and d.private_to_user_id == 1 and d.direction == "incoming"
    assert actions(d) == {
        "ken@acme.co.jp": (c.ACT_LOGGED, c.R_EXISTING_CONTACT),
        "new@acme.co.jp": (c.ACT_SKIPPED, c.R_NOT_A_CONTACT),
    }
    assert d.contacts_to_create == ()


def test_personal_without_contacts_is_skipped_no_contacts() -> None:
    msg = MessageFacts("personal", P("new@acme.co.jp"), to=(P("alice@ours.example"),), owner_id=1)
    assert decide(msg, account()).codes == (c.NO_CONTACTS,)


def test_personal_never_logs_automated_mail() -> None:
    msg = MessageFacts(
        "personal",
        P("ken@acme.co.jp"),
        to=(P("alice@ours.example"),),
        owner_id=1,
        kind="list",
        existing_contacts=frozenset({"ken@acme.co.jp"}),
    )
    assert decide(msg, account()).codes == (c.LIST,)


def test_personal_replies_only() -> None:
    base = dict(
        from_=P("ken@acme.co.jp"),
        to=(P("alice@ours.example"),),
        owner_id=1,
        existing_contacts=frozenset({"ken@acme.co.jp"}),
    )
    d = decide(MessageFacts("personal", **base), account(personal_logging="replies_only"))
    assert (d.outcome, d.codes) == (c.SKIPPED, (c.NOT_A_REPLY,))
    d = decide(
        MessageFacts("personal", **base, is_reply_to_logged=True),
        account(personal_logging="replies_only"),
    )
    assert d.outcome == c.LOGGED


def test_personal_sent_mail_is_outgoing() -> None:
    msg = MessageFacts(
        "personal",
        P("alice@ours.example"),
        to=(P("ken@acme.co.jp"),),
        owner_id=1,
        existing_contacts=frozenset({"ken@acme.co.jp"}),
    )
    assert decide(msg, account()).direction == "outgoing"


def test_unknown_source_is_an_error() -> None:
    with pytest.raises(ValueError):
        decide(MessageFacts("carrier-pigeon", None), account())

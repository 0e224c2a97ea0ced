"""Personal inboxes (§4 personal, C4): only what the owner chose is ever logged or shown."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db.models import StoredMessage
from tests.conftest import Api
from tests.e2e.mail import message
from tests.support.pipeline import ingest


def personal(api: Api) -> dict:
    acc = api.new_account("Acme", "alice@ours.example")
    admin = acc["token"]
    bob = api.new_user(admin, "bob@ours.example")
    conn = api.call(
        "POST",
        "/v1/connections",
        bob["token"],
        201,
        json={"address": "bob@ours.example", "kind": "personal"},
    )
    return {"admin": admin, "bob": bob, "conn": conn, "account_id": acc["account"]["id"]}


def feed(api: Api, p: dict, raw: bytes):  # type: ignore[no-untyped-def]
    return ingest(
        api.ctx.sessions,
        p["account_id"],
        "personal",
        raw,
        connection_id=p["conn"]["id"],
        folder="INBOX",
        folder_role="inbox",
    )


def raw_kept(api: Api, stored_id: int) -> bool:
    with api.ctx.sessions() as s:
        return (
            s.scalar(sa.select(StoredMessage.raw).where(StoredMessage.id == stored_id)) is not None
        )


def test_log_false_keeps_nothing(api: Api) -> None:
    p = personal(api)
    api.call("POST", "/v1/contacts", p["admin"], 201, json={"email": "ken@acme.co.jp"})
    api.call(
        "PUT",
        f"/v1/users/{p['bob']['user']['id']}/defaults",
        p["bob"]["token"],
        200,
        json={"log": False, "track": True, "never_log": []},
    )
    job = feed(api, p, message("ken@acme.co.jp", ["bob@ours.example"], subject="Private matter"))
    assert (job.outcome, job.email_id) == ("skipped", None)
    assert not raw_kept(api, job.stored_id)
    [d] = api.call("GET", "/v1/decisions", p["bob"]["token"], 200)["items"]
    assert (d["outcome"], d["codes"], d["subject"], d["message_id"], d["participants"]) == (
        "skipped",
        ["logging_off"],
        None,
        None,
        [],
    )
    assert api.call("GET", "/v1/decisions", p["admin"], 200)["items"] == []


def test_only_existing_contacts_and_no_contact_created(api: Api) -> None:
    p = personal(api)
    ken = api.call("POST", "/v1/contacts", p["admin"], 201, json={"email": "ken@acme.co.jp"})
    logged = feed(api, p, message("ken@acme.co.jp", ["bob@ours.example"], cc=["new@acme.co.jp"]))
    assert logged.outcome == "logged"
    email = api.call("GET", f"/v1/emails/{logged.email_id}", p["bob"]["token"], 200)
    assert email["contact_ids"] == [ken["id"]] and email["sources"] == ["personal"]
    assert api.call("GET", "/v1/contacts?email=new@acme.co.jp", p["admin"], 200)["items"] == []
    stranger = feed(api, p, message("stranger@else.example", ["bob@ours.example"], subject="Hi"))
    assert stranger.outcome == "skipped" and stranger.decision.codes == ("no_contacts",)
    assert not raw_kept(api, stranger.stored_id) and raw_kept(api, logged.stored_id)
    assert (
        api.call("GET", "/v1/contacts?email=stranger@else.example", p["admin"], 200)["items"] == []
    )
    auto = feed(
        api,
        p,
        message(
            "ken@acme.co.jp",
            ["bob@ours.example"],
            subject="Automatic reply: x",
            headers={"Auto-Submitted": "auto-replied"},
        ),
    )
    assert auto.outcome == "skipped" and auto.decision.codes == ("auto_reply",)


def test_replies_only(api: Api) -> None:
    p = personal(api)
    api.call("POST", "/v1/contacts", p["admin"], 201, json={"email": "ken@acme.co.jp"})
    api.call(
        "PATCH", "/v1/account/settings", p["admin"], 200, json={"personal_logging": "replies_only"}
    )
    first = feed(
        api, p, message("ken@acme.co.jp", ["bob@ours.example"], message_id="<t1@acme.co.jp>")
    )
    assert first.outcome == "skipped" and first.decision.codes == ("not_a_reply",)
    # A thread that already has a logged email (logged by BCC) qualifies.
    ingest(
        api.ctx.sessions,
        p["account_id"],
        "bcc",
        message("bob@ours.example", ["ken@acme.co.jp"], message_id="<t2@ours.example>"),
    )
    reply = feed(
        api,
        p,
        message(
            "ken@acme.co.jp",
            ["bob@ours.example"],
            subject="Re: Hello",
            headers={"In-Reply-To": "<t2@ours.example>"},
        ),
    )
    assert reply.outcome == "logged"


def test_other_users_never_see_personal_decisions_or_unlogged_mail(api: Api) -> None:
    p = personal(api)
    carol = api.new_user(p["admin"], "carol@ours.example")
    feed(api, p, message("stranger@else.example", ["bob@ours.example"], subject="Salary"))
    for token in (carol["token"], p["admin"]):
        assert api.call("GET", "/v1/decisions?source=personal", token, 200)["items"] == []
    assert (
        len(api.call("GET", "/v1/decisions?source=personal", p["bob"]["token"], 200)["items"]) == 1
    )
    api.call("GET", f"/v1/connections/{p['conn']['id']}", carol["token"], 404)

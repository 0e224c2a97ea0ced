"""Timelines, one email in full, visibility and decisions through the API (§4, §7, C4)."""

from __future__ import annotations

from tests.conftest import Api
from tests.e2e.mail import data, message
from tests.support.pipeline import ingest


def setup(api: Api) -> dict:
    acc = api.new_account("Acme", "alice@ours.example")
    admin = acc["token"]
    bob = api.new_user(admin, "bob@ours.example")
    carol = api.new_user(admin, "carol@ours.example")
    return {
        "acc": acc,
        "admin": admin,
        "bob": bob,
        "carol": carol,
        "account_id": acc["account"]["id"],
    }


def test_bcc_email_on_contact_and_company_timelines(api: Api) -> None:
    s = setup(api)
    raw = message(
        "Bob <bob@ours.example>",
        ["Ken Tanaka <ken@mail.acme.co.jp>"],
        subject="見積のご依頼",
        body="Please find the quote.",
    )
    job = ingest(api.ctx.sessions, s["account_id"], "bcc", raw)
    assert job.outcome == "logged"
    [contact] = api.call("GET", "/v1/contacts?email=ken@mail.acme.co.jp", s["carol"]["token"], 200)[
        "items"
    ]
    assert contact["owner_id"] == s["bob"]["user"]["id"] and contact["name"] == "Ken Tanaka"
    [summary] = api.call("GET", f"/v1/contacts/{contact['id']}/emails", s["carol"]["token"], 200)[
        "items"
    ]
    assert summary == {
        "id": summary["id"],
        "subject": "見積のご依頼",
        "from": {"address": "bob@ours.example", "name": "Bob"},
        "date": "2025-03-04T05:06:07Z",
        "direction": "outgoing",
        "kind": "normal",
        "snippet": summary["snippet"],
    }
    assert "Please find the quote." in summary["snippet"]
    company_items = api.call(
        "GET", f"/v1/companies/{contact['company_id']}/emails", s["admin"], 200
    )["items"]
    assert [e["id"] for e in company_items] == [summary["id"]]
    full = api.call("GET", f"/v1/emails/{summary['id']}", s["carol"]["token"], 200)
    assert full["to"] == [{"address": "ken@mail.acme.co.jp", "name": "Ken Tanaka"}]
    assert full["cc"] == [] and full["references"] == [] and full["in_reply_to"] is None
    assert full["sources"] == ["bcc"] and full["contact_ids"] == [contact["id"]]
    assert full["company_ids"] == [contact["company_id"]] and full["visibility"] == "account"
    assert full["logged_by_user_id"] == s["bob"]["user"]["id"] and full["forwarded_by"] is None
    assert full["message_id"].endswith("@test.example") and "<" not in full["message_id"]


def test_private_visibility_hides_from_others(api: Api) -> None:
    s = setup(api)
    job = ingest(
        api.ctx.sessions, s["account_id"], "bcc", message("bob@ours.example", ["ken@acme.co.jp"])
    )
    path = f"/v1/emails/{job.email_id}"
    api.call("PATCH", path, s["carol"]["token"], 403, json={"visibility": "private"})
    assert (
        api.call("PATCH", path, s["bob"]["token"], 200, json={"visibility": "private"})[
            "visibility"
        ]
        == "private"
    )
    api.call("GET", path, s["carol"]["token"], 404)
    contact_id = api.call("GET", path, s["bob"]["token"], 200)["contact_ids"][0]
    assert (
        api.call("GET", f"/v1/contacts/{contact_id}/emails", s["carol"]["token"], 200)["items"]
        == []
    )
    assert len(api.call("GET", f"/v1/contacts/{contact_id}/emails", s["admin"], 200)["items"]) == 1
    api.call("PATCH", path, s["admin"], 200, json={"visibility": "account"})
    api.call("GET", path, s["carol"]["token"], 200)
    api.call("PATCH", path, s["bob"]["token"], 422, json={"visibility": "team"})


def test_forward_email_shows_the_original(api: Api) -> None:
    acc = api.new_account("Acme", "hanako@ours.example")
    job = ingest(api.ctx.sessions, acc["account"]["id"], "forward", data("forward_gmail_en.eml"))
    full = api.call("GET", f"/v1/emails/{job.email_id}", acc["token"], 200)
    assert full["from"] == {"address": "jane@customer.example", "name": "Jane Customer"}
    assert full["subject"] == "Quote request" and full["forwarded_by"] == acc["admin"]["id"]
    assert full["sources"] == ["forward"] and full["direction"] == "incoming"
    assert full["cc"] == [{"address": "bob@customer.example", "name": "Bob"}]


def test_decisions_list_filters_and_privacy(api: Api) -> None:
    s = setup(api)
    sessions, acc = api.ctx.sessions, s["account_id"]
    ingest(sessions, acc, "bcc", message("bob@ours.example", ["ken@acme.co.jp"]))
    ingest(sessions, acc, "bcc", message("bob@ours.example", ["carol@ours.example"]))
    # A personal connection with logging off: only its owner sees the decision, redacted.
    from shared.db.base import utcnow
    from shared.db.engine import transaction
    from shared.db.models import Connection, User

    with transaction(sessions) as session:
        carol = session.get(User, s["carol"]["user"]["id"])
        carol.default_log = False
        conn = Connection(
            account_id=acc,
            address="carol.p@ours.example",
            kind="personal",
            user_id=carol.id,
            verified_at=utcnow(),  # proven (C7)
        )
        session.add(conn)
        session.flush()
        conn_id = conn.id
    ingest(
        sessions,
        acc,
        "personal",
        message("ken@acme.co.jp", ["carol@ours.example"], subject="Secret subject"),
        connection_id=conn_id,
    )
    bob_view = api.call("GET", "/v1/decisions", s["bob"]["token"], 200)["items"]
    assert [d["outcome"] for d in bob_view] == ["skipped", "logged"]
    assert bob_view[0]["codes"] == ["internal_only"]
    assert bob_view[1]["participants"] == [
        {"address": "ken@acme.co.jp", "action": "created_and_logged", "reason": "new_contact"}
    ]
    only_skipped = api.call("GET", "/v1/decisions?outcome=skipped&source=bcc", s["admin"], 200)[
        "items"
    ]
    assert len(only_skipped) == 1
    admin_view = api.call("GET", "/v1/decisions", s["admin"], 200)["items"]
    assert all(d["source"] != "personal" for d in admin_view)
    [mine] = api.call("GET", "/v1/decisions?source=personal", s["carol"]["token"], 200)["items"]
    assert (mine["outcome"], mine["codes"], mine["subject"], mine["participants"]) == (
        "skipped",
        ["logging_off"],
        None,
        [],
    )
    api.call("GET", "/v1/decisions?outcome=bogus", s["admin"], 422)

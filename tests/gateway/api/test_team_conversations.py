"""Team inboxes: threading, reopening, bounces, Sent-folder replies, routing rules and the
conversations API — the pipeline run in-process on both databases."""

from __future__ import annotations

from tests.conftest import Api
from tests.e2e.mail import message
from tests.support.pipeline import ingest


def team(api: Api, rules: list | None = None) -> dict:
    acc = api.new_account("Acme", "alice@ours.example")
    admin = acc["token"]
    bob = api.new_user(admin, "bob@ours.example")
    outsider = api.new_user(admin, "olga@ours.example")
    inbox = api.call(
        "POST",
        "/v1/inboxes",
        admin,
        201,
        json={"name": "Support", "member_ids": [bob["user"]["id"]]},
    )
    conn = api.call(
        "POST",
        "/v1/connections",
        admin,
        201,
        json={"address": "support@ours.example", "kind": "team", "inbox_id": inbox["id"]},
    )
    if rules is not None:
        api.call("PUT", f"/v1/inboxes/{inbox['id']}/rules", admin, 200, json={"items": rules})
    return {
        "admin": admin,
        "bob": bob,
        "olga": outsider,
        "inbox": inbox,
        "conn": conn,
        "account_id": acc["account"]["id"],
        "alice_id": acc["admin"]["id"],
    }


def feed(api: Api, t: dict, raw: bytes, folder_role: str = "inbox"):  # type: ignore[no-untyped-def]
    return ingest(
        api.ctx.sessions,
        t["account_id"],
        "team",
        raw,
        inbox_id=t["inbox"]["id"],
        connection_id=t["conn"]["id"],
        folder="INBOX",
        folder_role=folder_role,
    )


def convs(api: Api, t: dict, query: str = "") -> list[dict]:
    return api.call(
        "GET", f"/v1/inboxes/{t['inbox']['id']}/conversations{query}", t["bob"]["token"], 200
    )["items"]


def test_reply_joins_by_references_and_subject_threading(api: Api) -> None:
    t = team(api)
    first = feed(
        api,
        t,
        message(
            "Ken <ken@acme.co.jp>",
            ["support@ours.example"],
            subject="Broken arm",
            message_id="<a1@acme.co.jp>",
        ),
    )
    assert first.outcome == "logged"
    reply = message(
        "bob@ours.example",
        ["ken@acme.co.jp"],
        subject="Re: Broken arm",
        message_id="<b1@ours.example>",
        headers={"In-Reply-To": "<a1@acme.co.jp>"},
    )
    out = feed(api, t, reply, folder_role="sent")
    # Same subject and participant, no headers: joins by subject.
    feed(
        api,
        t,
        message("ken@acme.co.jp", ["support@ours.example"], subject="RE: [Ticket] Broken arm"),
    )
    # Same subject, another customer: a new conversation.
    feed(api, t, message("amy@other.example", ["support@ours.example"], subject="Broken arm"))
    items = convs(api, t)
    assert len(items) == 2
    ken = next(c for c in items if c["message_count"] == 3)
    assert (
        ken["subject"] == "Broken arm" and ken["status"] == "open" and len(ken["contact_ids"]) == 1
    )
    detail = api.call("GET", f"/v1/conversations/{ken['id']}", t["bob"]["token"], 200)
    assert [m["direction"] for m in detail["messages"]] == ["incoming", "outgoing", "incoming"]
    sent = api.call("GET", f"/v1/emails/{out.email_id}", t["bob"]["token"], 200)
    assert sent["logged_by_user_id"] == t["bob"]["user"]["id"] and sent["direction"] == "outgoing"
    assert sent["conversation_id"] == ken["id"] and sent["sources"] == ["team"]


def test_contact_reply_reopens_auto_reply_does_not(api: Api) -> None:
    t = team(api)
    feed(
        api,
        t,
        message(
            "ken@acme.co.jp",
            ["support@ours.example"],
            subject="Order",
            message_id="<o1@acme.co.jp>",
        ),
    )
    [c] = convs(api, t)
    api.call(
        "PATCH", f"/v1/conversations/{c['id']}", t["bob"]["token"], 200, json={"status": "closed"}
    )
    auto = feed(
        api,
        t,
        message(
            "ken@acme.co.jp",
            ["support@ours.example"],
            subject="Automatic reply: Order",
            headers={"Auto-Submitted": "auto-replied", "In-Reply-To": "<o1@acme.co.jp>"},
        ),
    )
    assert auto.outcome == "logged"
    [c] = convs(api, t)
    assert c["status"] == "closed" and c["message_count"] == 2
    feed(
        api,
        t,
        message(
            "ken@acme.co.jp",
            ["support@ours.example"],
            subject="Re: Order",
            headers={"In-Reply-To": "<o1@acme.co.jp>"},
        ),
    )
    [c] = convs(api, t)
    assert c["status"] == "open" and c["message_count"] == 3


def test_bounce_attaches_to_reported_conversation_with_tag(api: Api) -> None:
    t = team(api)
    feed(
        api,
        t,
        message(
            "bob@ours.example",
            ["gone@acme.co.jp"],
            subject="Your invoice",
            message_id="<inv-1@ours.example>",
        ),
        folder_role="sent",
    )
    bounce = (
        b"From: MAILER-DAEMON@mx.acme.co.jp\r\nTo: support@ours.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce1@mx.acme.co.jp>\r\n"
        b"Date: Tue, 04 Mar 2025 06:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.acme.co.jp\r\n\r\n"
        b"Final-Recipient: rfc822; gone@acme.co.jp\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <inv-1@ours.example>\r\nSubject: Your invoice\r\n"
        b"--B--\r\n"
    )
    job = feed(api, t, bounce)
    assert job.content.kind == "bounce"
    [c] = convs(api, t)
    assert c["message_count"] == 2 and c["tags"] == ["delivery_failed"]
    email = api.call("GET", f"/v1/emails/{job.email_id}", t["admin"], 200)
    assert email["bounce_of_message_id"] == "inv-1@ours.example" and email["contact_ids"] == []


def test_routing_actions_on_new_conversations(api: Api) -> None:
    t0 = team(api)
    bob_id = t0["bob"]["user"]["id"]
    rules = [
        {
            "name": "skip spam",
            "conditions": {"from_domain": ["spam.example"]},
            "action": {"type": "skip"},
        },
        {
            "name": "close newsletters",
            "conditions": {"subject_contains": ["newsletter"]},
            "action": {"type": "close"},
            "tags": ["news"],
        },
        {
            "name": "owner",
            "conditions": {"is_contact": True},
            "action": {"type": "assign_contact_owner"},
        },
        {
            "name": "apac",
            "conditions": {"from_domain": ["x.jp"]},
            "action": {"type": "assign_user", "user_id": bob_id},
            "tags": ["apac"],
        },
    ]
    api.call(
        "PUT", f"/v1/inboxes/{t0['inbox']['id']}/rules", t0["admin"], 200, json={"items": rules}
    )
    t = t0
    skipped = feed(api, t, message("x@spam.example", ["support@ours.example"], subject="Buy"))
    assert skipped.outcome == "skipped" and skipped.decision.codes == ("skipped_by_rule",)
    assert convs(api, t) == []
    feed(
        api,
        t,
        message("news@vendor.example", ["support@ours.example"], subject="Monthly newsletter"),
    )
    [c] = convs(api, t)
    assert (c["status"], c["tags"], c["assignee_id"]) == ("closed", ["news"], None)
    feed(api, t, message("a@mail.x.jp", ["support@ours.example"], subject="見積"))
    apac = next(c for c in convs(api, t) if c["subject"] == "見積")
    assert (apac["assignee_id"], apac["tags"]) == (bob_id, ["apac"])
    # An existing contact with an owner: the owner rule fires before the apac one.
    api.call(
        "POST",
        "/v1/contacts",
        t["admin"],
        201,
        json={"email": "k@y.x.jp", "owner_id": t["alice_id"]},
    )
    feed(api, t, message("k@y.x.jp", ["support@ours.example"], subject="Hello"))
    hello = next(c for c in convs(api, t) if c["subject"] == "Hello")
    assert hello["assignee_id"] == t["alice_id"]
    # Replies keep the assignee (no rule re-run).
    feed(api, t, message("a@mail.x.jp", ["support@ours.example"], subject="Re: 見積"))
    apac = next(c for c in convs(api, t) if c["subject"] == "見積")
    assert apac["message_count"] == 2 and apac["assignee_id"] == bob_id
    assert [c["subject"] for c in convs(api, t, "?status=closed")] == ["Monthly newsletter"]
    assert [c["subject"] for c in convs(api, t, f"?assignee_id={bob_id}")] == ["見積"]


def test_round_robin_is_fair(api: Api) -> None:
    t = team(api)
    ids = [t["alice_id"], t["bob"]["user"]["id"], t["olga"]["user"]["id"]]
    api.call(
        "PUT",
        f"/v1/inboxes/{t['inbox']['id']}/rules",
        t["admin"],
        200,
        json={"items": [{"name": "rr", "action": {"type": "round_robin", "user_ids": ids}}]},
    )
    for i in range(9):
        feed(api, t, message(f"c{i}@cust.example", ["support@ours.example"], subject=f"Case {i}"))
    counts: dict[int, int] = {}
    for c in api.call("GET", f"/v1/inboxes/{t['inbox']['id']}/conversations", t["admin"], 200)[
        "items"
    ]:
        counts[c["assignee_id"]] = counts.get(c["assignee_id"], 0) + 1
    assert counts == {ids[0]: 3, ids[1]: 3, ids[2]: 3}
    feed(api, t, message("c9@cust.example", ["support@ours.example"], subject="Case 9"))  # 4/3/3
    # A rule inserted in front must not take over this rule's counters, nor this rule start
    # over (which would give the next two to the first two users again: 5/4/3).
    rules = [
        {"name": "vip", "conditions": {"from_domain": ["vip.example"]},
         "action": {"type": "round_robin", "user_ids": ids[1:]}},
        {"name": "rr", "action": {"type": "round_robin", "user_ids": ids}},
    ]  # fmt: skip
    api.call("PUT", f"/v1/inboxes/{t['inbox']['id']}/rules", t["admin"], 200, json={"items": rules})
    for i in range(4):
        feed(api, t, message(f"v{i}@vip.example", ["support@ours.example"], subject=f"VIP {i}"))
    for i in range(2):
        feed(api, t, message(f"d{i}@cust.example", ["support@ours.example"], subject=f"More {i}"))
    vip: dict[int, int] = {}
    rest: dict[int, int] = {}
    for c in api.call(
        "GET", f"/v1/inboxes/{t['inbox']['id']}/conversations?limit=500", t["admin"], 200
    )["items"]:
        into = vip if c["subject"].startswith("VIP") else rest
        into[c["assignee_id"]] = into.get(c["assignee_id"], 0) + 1
    assert vip == {ids[1]: 2, ids[2]: 2}
    assert rest == {ids[0]: 4, ids[1]: 4, ids[2]: 4}


def test_dry_run_says_which_rule_and_why_not_the_others(api: Api) -> None:
    t = team(api)
    bob_id = t["bob"]["user"]["id"]
    api.call(
        "PUT",
        f"/v1/inboxes/{t['inbox']['id']}/rules",
        t["admin"],
        200,
        json={
            "items": [
                {
                    "name": "urgent",
                    "conditions": {"subject_regex": "(?i)urgent"},
                    "action": {"type": "close"},
                },
                {
                    "name": "apac",
                    "conditions": {"from_domain": ["x.jp"], "body_contains": ["quote"]},
                    "action": {"type": "assign_user", "user_id": bob_id},
                },
            ]
        },
    )
    raw = message(
        "a@x.jp", ["support@ours.example"], subject="Price", body="Please QUOTE 10 units"
    ).decode()
    out = api.call(
        "POST",
        f"/v1/inboxes/{t['inbox']['id']}/rules/test",
        t["bob"]["token"],
        200,
        json={"raw": raw},
    )
    assert out["matched"] == 1 and out["rule_name"] == "apac"
    assert out["action"] == {"type": "assign_user", "user_id": bob_id}
    assert out["trace"][0] == {
        "index": 0,
        "name": "urgent",
        "matched": False,
        "failed_conditions": ["subject_regex"],
    }
    api.call(
        "POST",
        f"/v1/inboxes/{t['inbox']['id']}/rules/test",
        t["olga"]["token"],
        404,
        json={"raw": raw},
    )


def test_conversations_visible_to_members_and_admins_only(api: Api) -> None:
    t = team(api)
    feed(api, t, message("ken@acme.co.jp", ["support@ours.example"], subject="Hi"))
    [c] = convs(api, t)
    api.call("GET", f"/v1/conversations/{c['id']}", t["admin"], 200)
    api.call("GET", f"/v1/conversations/{c['id']}", t["olga"]["token"], 404)
    api.call("GET", f"/v1/inboxes/{t['inbox']['id']}/conversations", t["olga"]["token"], 404)
    api.call(
        "PATCH", f"/v1/conversations/{c['id']}", t["olga"]["token"], 404, json={"status": "closed"}
    )
    out = api.call(
        "PATCH",
        f"/v1/conversations/{c['id']}",
        t["bob"]["token"],
        200,
        json={"assignee_id": t["bob"]["user"]["id"]},
    )
    assert out["assignee_id"] == t["bob"]["user"]["id"]
    err = api.call(
        "PATCH",
        f"/v1/conversations/{c['id']}",
        t["bob"]["token"],
        422,
        json={"assignee_id": t["olga"]["user"]["id"]},
    )
    assert err["error"]["code"] == "not_a_member"


def test_team_forward_address_mail_is_a_conversation(api: Api) -> None:
    t = team(api)
    job = ingest(
        api.ctx.sessions,
        t["account_id"],
        "team",
        message("ken@acme.co.jp", [t["inbox"]["forward_address"]], subject="Via forward address"),
        inbox_id=t["inbox"]["id"],
    )
    assert job.outcome == "logged"
    [c] = convs(api, t)
    assert c["subject"] == "Via forward address"


def test_bounce_whose_headers_point_at_the_original_is_tagged(api: Api) -> None:
    """Gmail-style bounces carry In-Reply-To/References of the failed message: still §5's
    "attached to the conversation of the message it reports on" and tagged."""
    t = team(api)
    quote = message(
        "ken@acme.co.jp", ["support@ours.example"], subject="Quote", message_id="<q1@acme.co.jp>"
    )
    feed(api, t, quote)
    feed(
        api,
        t,
        message(
            "bob@ours.example", ["gone@acme.co.jp"], subject="Re: Quote",
            message_id="<r1@ours.example>", headers={"In-Reply-To": "<q1@acme.co.jp>"},
        ),
        folder_role="sent",
    )  # fmt: skip
    bounce = (
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        b"To: support@ours.example\r\nSubject: Delivery Status Notification (Failure)\r\n"
        b"Message-ID: <bounce2@mx.google.com>\r\nIn-Reply-To: <r1@ours.example>\r\n"
        b"References: <q1@acme.co.jp> <r1@ours.example>\r\n"
        b"Date: Tue, 04 Mar 2025 06:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nAddress not found.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; googlemail.com\r\n\r\n"
        b"Final-Recipient: rfc822; gone@acme.co.jp\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <r1@ours.example>\r\nSubject: Re: Quote\r\n"
        b"--B--\r\n"
    )
    assert feed(api, t, bounce).content.kind == "bounce"
    [c] = convs(api, t)
    assert c["message_count"] == 3 and c["tags"] == ["delivery_failed"]


def test_a_private_email_in_a_conversation_is_hidden_from_other_members(api: Api) -> None:
    t = team(api)
    first = feed(api, t, message("ken@acme.co.jp", ["support@ours.example"], subject="Deal"))
    second = feed(
        api,
        t,
        message("ken@acme.co.jp", ["support@ours.example"], subject="Re: Deal", body="terms"),
    )
    [c] = convs(api, t)
    assert c["message_count"] == 2
    # The admin makes the second one private: a member no longer sees it anywhere.
    api.call(
        "PATCH", f"/v1/emails/{second.email_id}", t["admin"], 200, json={"visibility": "private"}
    )
    bob = t["bob"]["token"]
    [c] = convs(api, t)
    assert c["message_count"] == 1
    detail = api.call("GET", f"/v1/conversations/{c['id']}", bob, 200)
    assert [m["id"] for m in detail["messages"]] == [first.email_id]
    assert detail["message_count"] == 1
    api.call("GET", f"/v1/emails/{second.email_id}", bob, 404)
    patched = api.call("PATCH", f"/v1/conversations/{c['id']}", bob, 200, json={"status": "closed"})
    assert patched["message_count"] == 1
    # The admin still sees both.
    full = api.call("GET", f"/v1/conversations/{c['id']}", t["admin"], 200)
    assert [m["id"] for m in full["messages"]] == [first.email_id, second.email_id]
    assert full["message_count"] == 2


def test_one_message_to_two_team_inboxes_is_shown_in_both(api: Api) -> None:
    """One logged email per message per account, but each inbox that takes it in shows it in
    a conversation of its own (§4)."""
    t = team(api)
    sales = api.call(
        "POST", "/v1/inboxes", t["admin"], 201,
        json={"name": "Sales", "member_ids": [t["bob"]["user"]["id"]]},
    )  # fmt: skip
    sales_conn = api.call(
        "POST", "/v1/connections", t["admin"], 201,
        json={"address": "sales@ours.example", "kind": "team", "inbox_id": sales["id"]},
    )  # fmt: skip
    raw = message(
        "ken@acme.co.jp",
        ["support@ours.example", "sales@ours.example"],
        subject="Need a quote and help",
        message_id="<both@acme.co.jp>",
    )
    first = feed(api, t, raw)
    second = ingest(
        api.ctx.sessions, t["account_id"], "team", raw, inbox_id=sales["id"],
        connection_id=sales_conn["id"], folder="INBOX", folder_role="inbox",
    )  # fmt: skip
    assert (first.outcome, second.outcome) == ("logged", "duplicate")
    assert first.email_id == second.email_id
    bob = t["bob"]["token"]
    listed = {}
    for inbox in (t["inbox"], sales):
        [c] = api.call("GET", f"/v1/inboxes/{inbox['id']}/conversations", bob, 200)["items"]
        detail = api.call("GET", f"/v1/conversations/{c['id']}", bob, 200)
        assert [m["id"] for m in detail["messages"]] == [first.email_id]
        listed[inbox["id"]] = c["id"]
    assert listed[t["inbox"]["id"]] != listed[sales["id"]]
    # A reply threads in each inbox by its headers.
    reply = message(
        "ken@acme.co.jp", ["sales@ours.example"], subject="Re: Need a quote and help",
        headers={"In-Reply-To": "<both@acme.co.jp>"},
    )  # fmt: skip
    ingest(
        api.ctx.sessions, t["account_id"], "team", reply, inbox_id=sales["id"],
        connection_id=sales_conn["id"], folder="INBOX", folder_role="inbox",
    )  # fmt: skip
    [c] = api.call("GET", f"/v1/inboxes/{sales['id']}/conversations", bob, 200)["items"]
    assert c["id"] == listed[sales["id"]] and c["message_count"] == 2
    email = api.call("GET", f"/v1/emails/{first.email_id}", bob, 200)
    assert email["conversation_id"] == listed[t["inbox"]["id"]]  # the first inbox's


def test_the_decision_records_the_routing_trace_and_the_thread_match(api: Api) -> None:
    """Mailman's rule hits and misses, on the record: GET /v1/decisions says which rule fired
    for a new conversation and why each earlier one did not, and how a reply was threaded."""
    t = team(api)
    bob_id = t["bob"]["user"]["id"]
    rules = [
        {
            "name": "vip",
            "conditions": {"from_domain": ["vip.example"]},
            "action": {"type": "close"},
        },
        {
            "name": "apac",
            "conditions": {"from_domain": ["x.jp"]},
            "action": {"type": "assign_user", "user_id": bob_id},
        },
    ]
    api.call("PUT", f"/v1/inboxes/{t['inbox']['id']}/rules", t["admin"], 200, json={"items": rules})
    first = message("a@mail.x.jp", ["support@ours.example"], subject="見積", message_id="<q1@x.jp>")
    feed(api, t, first)
    reply = message(
        "a@mail.x.jp",
        ["support@ours.example"],
        subject="Re: 見積",
        headers={"In-Reply-To": "<q1@x.jp>"},
    )
    feed(api, t, reply)
    items = api.call("GET", "/v1/decisions?source=team", t["admin"], 200)["items"]
    new, answer = sorted(items, key=lambda d: d["id"])
    [conversation] = convs(api, t)
    assert new["thread"] == {"how": "new", "conversation_id": conversation["id"]}
    assert new["routing"]["rule_name"] == "apac" and new["routing"]["matched"] == 1
    assert new["routing"]["trace"][0] == {
        "index": 0,
        "name": "vip",
        "matched": False,
        "failed_conditions": ["from_domain"],
    }
    assert answer["thread"] == {"how": "references", "conversation_id": conversation["id"]}
    assert answer["routing"] is None  # replies keep their assignee: no rule runs

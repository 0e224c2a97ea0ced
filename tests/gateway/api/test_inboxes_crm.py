"""Team inboxes with rules, contacts and companies, tenant isolation and the error envelope."""

from __future__ import annotations

from tests.conftest import Api


def test_inbox_crud_membership_and_visibility(api: Api) -> None:
    admin = api.new_account()["token"]
    a = api.new_user(admin, "a@acme.example")
    b = api.new_user(admin, "b@acme.example")
    inbox = api.call(
        "POST",
        "/v1/inboxes",
        admin,
        201,
        json={"name": "Sales", "sender_name": "Acme Sales", "member_ids": [a["user"]["id"]]},
    )
    assert inbox["member_ids"] == [a["user"]["id"]] and inbox["sender_name"] == "Acme Sales"
    assert inbox["forward_address"].endswith("@log.localhost")
    path = f"/v1/inboxes/{inbox['id']}"
    assert api.call("GET", path, a["token"], 200)["name"] == "Sales"
    api.call("GET", path, b["token"], 404)
    assert api.call("GET", "/v1/inboxes", b["token"], 200)["items"] == []
    api.call("POST", "/v1/inboxes", a["token"], 403, json={"name": "X"})
    out = api.call(
        "PATCH", path, admin, 200, json={"member_ids": [a["user"]["id"], b["user"]["id"]]}
    )
    assert out["member_ids"] == sorted([a["user"]["id"], b["user"]["id"]])
    err = api.call("POST", "/v1/inboxes", admin, 422, json={"name": "Y", "member_ids": [987654]})
    assert err["error"]["code"] == "unknown_user"


RULE = {
    "name": "APAC deals",
    "conditions": {
        "from_address": ["A@x.jp"],
        "from_domain": ["x.jp"],
        "to_address": ["sales@ours.example"],
        "subject_contains": ["見積"],
        "body_contains": ["quote"],
        "subject_regex": "(?i)urgent",
        "header": {"name": "X-Priority", "pattern": "^1"},
        "is_contact": True,
    },
    "action": {"type": "assign_user", "user_id": 0},
    "tags": ["apac"],
}


def test_rules_are_validated_and_stored_in_order(api: Api) -> None:
    admin = api.new_account()["token"]
    a = api.new_user(admin, "a@acme.example")
    uid = a["user"]["id"]
    inbox = api.call("POST", "/v1/inboxes", admin, 201, json={"name": "Sales", "member_ids": [uid]})
    path = f"/v1/inboxes/{inbox['id']}/rules"
    assert api.call("GET", path, a["token"], 200) == {"items": []}
    rules = [
        {**RULE, "action": {"type": "assign_user", "user_id": uid}},
        {"name": "rr", "conditions": {}, "action": {"type": "round_robin", "user_ids": [uid]}},
        {"name": "owner", "action": {"type": "assign_contact_owner"}},
        {
            "name": "close",
            "conditions": {"subject_contains": ["newsletter"]},
            "action": {"type": "close"},
        },
        {
            "name": "skip",
            "conditions": {"from_domain": ["spam.example"]},
            "action": {"type": "skip"},
        },
    ]
    saved = api.call("PUT", path, admin, 200, json={"items": rules})["items"]
    assert [r["name"] for r in saved] == ["APAC deals", "rr", "owner", "close", "skip"]
    assert saved[0]["conditions"]["from_address"] == ["a@x.jp"]
    assert saved[0]["tags"] == ["apac"]
    assert api.call("GET", path, a["token"], 200)["items"] == saved
    api.call("PUT", path, a["token"], 403, json={"items": rules})
    bad = [
        {**RULE, "conditions": {"unknown_field": 1}, "action": {"type": "close"}},
        {**RULE, "conditions": {"subject_regex": "(unclosed"}, "action": {"type": "close"}},
        {
            **RULE,
            "conditions": {"header": {"name": "X", "pattern": "[z-a]"}},
            "action": {"type": "close"},
        },
        {**RULE, "action": {"type": "explode"}},
        {**RULE, "action": {"type": "round_robin", "user_ids": []}},
    ]
    for rule in bad:
        err = api.call("PUT", path, admin, 422, json={"items": [rule]})
        assert err["error"]["code"] == "validation_error", rule
    err = api.call(
        "PUT",
        path,
        admin,
        422,
        json={"items": [{**RULE, "action": {"type": "assign_user", "user_id": 424242}}]},
    )
    assert err["error"]["code"] == "unknown_user"
    # A refused PUT leaves the saved rules untouched.
    assert len(api.call("GET", path, admin, 200)["items"]) == 5


def test_contacts_and_companies(api: Api) -> None:
    admin = api.new_account()["token"]
    c = api.call(
        "POST", "/v1/contacts", admin, 201, json={"email": "Ken@Mail.Acme.co.jp", "name": "Ken"}
    )
    assert c["email"] == "ken@mail.acme.co.jp" and c["company_id"] is not None
    company = api.call("GET", f"/v1/companies/{c['company_id']}", admin, 200)
    assert company["domain"] == "acme.co.jp"
    assert api.call("GET", "/v1/companies?domain=acme.co.jp", admin, 200)["items"] == [company]
    free = api.call("POST", "/v1/contacts", admin, 201, json={"email": "someone@gmail.com"})
    assert free["company_id"] is None
    jp_free = api.call("POST", "/v1/contacts", admin, 201, json={"email": "x@docomo.ne.jp"})
    assert jp_free["company_id"] is None
    err = api.call("POST", "/v1/contacts", admin, 409, json={"email": "KEN@mail.acme.co.jp"})
    assert err["error"]["code"] == "contact_exists"
    assert err["error"]["details"]["contact_id"] == c["id"]
    found = api.call("GET", "/v1/contacts?email=KEN@MAIL.ACME.CO.JP", admin, 200)["items"]
    assert [x["id"] for x in found] == [c["id"]]
    api.call(
        "POST", "/v1/contacts", admin, 422, json={"email": "y@acme.example", "owner_id": 999999}
    )


def test_another_accounts_objects_answer_404(api: Api) -> None:
    one = api.new_account("One", "a@one.example")["token"]
    two = api.new_account("Two", "a@two.example")["token"]
    u = api.new_user(one, "m@one.example")["user"]
    inbox = api.call("POST", "/v1/inboxes", one, 201, json={"name": "S"})
    conn = api.call(
        "POST",
        "/v1/connections",
        one,
        201,
        json={"address": "s@one.example", "kind": "team", "inbox_id": inbox["id"]},
    )
    contact = api.call("POST", "/v1/contacts", one, 201, json={"email": "c@cust.example"})
    for method, path, body in [
        ("GET", f"/v1/users/{u['id']}", None),
        ("PATCH", f"/v1/users/{u['id']}", {"name": "x"}),
        ("GET", f"/v1/users/{u['id']}/defaults", None),
        ("GET", f"/v1/inboxes/{inbox['id']}", None),
        ("PATCH", f"/v1/inboxes/{inbox['id']}", {"name": "x"}),
        ("GET", f"/v1/inboxes/{inbox['id']}/rules", None),
        ("PUT", f"/v1/inboxes/{inbox['id']}/rules", {"items": []}),
        ("GET", f"/v1/connections/{conn['id']}", None),
        ("DELETE", f"/v1/connections/{conn['id']}", None),
        ("GET", f"/v1/contacts/{contact['id']}", None),
        ("GET", f"/v1/companies/{contact['company_id']}", None),
    ]:
        err = api.call(method, path, two, 404, json=body)
        assert err["error"]["code"] == "not_found", path
    assert api.call("GET", "/v1/contacts", two, 200)["items"] == []
    # Nothing changed for the owner.
    assert api.call("GET", f"/v1/inboxes/{inbox['id']}", one, 200)["name"] == "S"


def test_error_envelope_and_openapi(api: Api) -> None:
    err = api.call("GET", "/v1/nowhere", None, 404)
    assert set(err["error"]) >= {"code", "message"}
    admin = api.new_account()["token"]
    err = api.call(
        "POST",
        "/v1/users",
        admin,
        422,
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert err["error"]["code"] == "validation_error"
    spec = api.call("GET", "/openapi.json", None, 200)
    assert "/v1/connections/{connection_id}" in spec["paths"]
    assert api.call("GET", "/healthz", None, 200) == {"status": "ok"}
    assert api.call("GET", "/readyz", None, 200)["checks"]["database"] == "ok"

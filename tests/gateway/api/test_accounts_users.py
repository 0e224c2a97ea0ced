"""Accounts, settings, users and defaults through the API, on both databases."""

from __future__ import annotations

import re

from tests.conftest import OPERATOR_TOKEN, Api


def test_create_account_gives_unguessable_intake_addresses(api: Api) -> None:
    created = api.new_account()
    account, admin, token = created["account"], created["admin"], created["token"]
    assert admin["role"] == "admin" and admin["email"] == "admin@acme.example"
    for key in ("bcc_address", "forward_address"):
        local, domain = account[key].split("@")
        assert domain == "log.localhost"
        # >= 128 bits of randomness: 32 base32 characters carry 160 bits.
        assert re.fullmatch(r"(log|fwd)-[a-z2-7]{32}", local), local
    assert account["bcc_address"] != account["forward_address"]
    assert account["settings"] == {
        "never_log": [],
        "internal_domains": [],
        "create_contacts": True,
        "associate_companies": True,
        "personal_logging": "all",
        "sender_verification": "known_sender",
        "trusted_authserv_ids": [],
    }
    assert api.call("GET", "/v1/account", token, 200)["id"] == account["id"]
    other = api.new_account("Beta", "boss@beta.example")["account"]
    assert other["bcc_address"] != account["bcc_address"]


def test_accounts_route_needs_the_operator(api: Api) -> None:
    token = api.new_account()["token"]
    body = {"name": "X", "admin_email": "x@x.example"}
    err = api.call("POST", "/v1/accounts", token, 403, json=body)
    assert err["error"]["code"] == "operator_required"
    err = api.call("POST", "/v1/accounts", None, 401, json=body)
    assert err["error"]["code"] == "unauthorized"
    err = api.call("POST", "/v1/accounts", "wrong", 401, json=body)
    assert err == {"error": {"code": "unauthorized", "message": "invalid or revoked token"}}
    # The operator has no account of its own.
    assert api.call("GET", "/v1/account", OPERATOR_TOKEN, 403)["error"]["code"]


def test_settings_patch_is_partial_validated_and_admin_only(api: Api) -> None:
    acc = api.new_account()
    admin = acc["token"]
    member = api.new_user(admin, "m@acme.example")["token"]
    out = api.call(
        "PATCH",
        "/v1/account/settings",
        admin,
        200,
        json={"never_log": ["Bob@Example.com", "example.org"], "personal_logging": "replies_only"},
    )
    assert out["settings"]["never_log"] == ["bob@example.com", "example.org"]
    assert out["settings"]["personal_logging"] == "replies_only"
    assert out["settings"]["create_contacts"] is True
    err = api.call("PATCH", "/v1/account/settings", admin, 422, json={"personal_logging": "x"})
    assert err["error"]["code"] == "validation_error"
    err = api.call("PATCH", "/v1/account/settings", admin, 422, json={"never_log": ["not valid"]})
    assert err["error"]["code"] == "validation_error"
    err = api.call("PATCH", "/v1/account/settings", admin, 422, json={"bogus": 1})
    assert err["error"]["code"] == "validation_error"
    api.call("PATCH", "/v1/account/settings", member, 403, json={"create_contacts": False})


def test_users_roles_and_deactivation(api: Api) -> None:
    admin = api.new_account()["token"]
    created = api.new_user(admin, "Mia@ACME.example")
    assert created["user"] == {
        "id": created["user"]["id"],
        "email": "mia@acme.example",
        "name": None,
        "role": "member",
        "active": True,
    }
    member = created["token"]
    uid = created["user"]["id"]
    # Members list users but cannot create or change them.
    assert len(api.call("GET", "/v1/users", member, 200)["items"]) == 2
    api.call("POST", "/v1/users", member, 403, json={"email": "z@acme.example"})
    api.call("PATCH", f"/v1/users/{uid}", member, 403, json={"role": "admin"})
    # The same address twice is a conflict, case-insensitively.
    err = api.call("POST", "/v1/users", admin, 409, json={"email": "MIA@acme.example"})
    assert err["error"]["code"] == "user_exists"
    err = api.call("POST", "/v1/users", admin, 422, json={"email": "not-an-address"})
    assert err["error"]["code"] == "validation_error"
    # Deactivating a user revokes their token.
    out = api.call("PATCH", f"/v1/users/{uid}", admin, 200, json={"active": False})
    assert out["active"] is False
    api.call("GET", "/v1/account", member, 401)


def test_user_defaults_self_or_admin(api: Api) -> None:
    admin = api.new_account()["token"]
    a = api.new_user(admin, "a@acme.example")
    b = api.new_user(admin, "b@acme.example")
    path = f"/v1/users/{a['user']['id']}/defaults"
    assert api.call("GET", path, a["token"], 200) == {"log": True, "track": True, "never_log": []}
    body = {"log": False, "track": True, "never_log": ["Boss@Corp.example", "rival.example"]}
    out = api.call("PUT", path, a["token"], 200, json=body)
    assert out == {"log": False, "track": True, "never_log": ["boss@corp.example", "rival.example"]}
    api.call("GET", path, b["token"], 403)
    api.call("PUT", path, b["token"], 403, json=body)
    assert api.call("GET", path, admin, 200)["log"] is False
    api.call("PUT", path, a["token"], 422, json={"log": True})


def test_lists_page_and_cap(api: Api) -> None:
    admin = api.new_account()["token"]
    for i in range(3):
        api.new_user(admin, f"u{i}@acme.example")
    # Newest first: u2, u1, u0, then the admin.
    page = api.call("GET", "/v1/users?limit=2&offset=1", admin, 200)["items"]
    assert [u["email"] for u in page] == ["u1@acme.example", "u0@acme.example"]
    assert len(api.call("GET", "/v1/users?limit=100000", admin, 200)["items"]) == 4
    api.call("GET", "/v1/users?limit=0", admin, 422)

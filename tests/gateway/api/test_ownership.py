"""C7: an address is a user's own only when proven. Until then a personal connection holds its
address (C1) but counts for nothing — not internal, not a known sender, not the user's mail —
and nobody connects another user's primary email (both databases)."""

from __future__ import annotations

from tests.conftest import Api
from tests.e2e.mail import message
from tests.support.pipeline import ingest


def _setup(api: Api) -> dict:
    acc = api.new_account(admin_email="admin@ours.example")
    admin = acc["token"]
    mallory = api.new_user(admin, "mallory@ours.example")
    bob = api.new_user(admin, "bob@ours.example")
    return {"acc": acc, "admin": admin, "mallory": mallory, "bob": bob}


def _connect(api: Api, token: str, address: str, expect: int = 201) -> dict:
    return api.call(
        "POST", "/v1/connections", token, expect, json={"address": address, "kind": "personal"}
    )


def test_a_customers_address_connected_by_a_member_does_not_hide_mail_with_that_customer(
    api: Api,
) -> None:
    s = _setup(api)
    conn = _connect(api, s["mallory"]["token"], "ceo@customer.example")
    assert conn["status"] == "unverified"
    account_id = s["acc"]["account"]["id"]
    job = ingest(
        api.ctx.sessions,
        account_id,
        "bcc",
        message("admin@ours.example", ["ceo@customer.example"]),
    )
    # Not internal: the customer gets the email on their timeline.
    assert (job.outcome, [p.address for p in job.decision.participants]) == (
        "logged",
        ["ceo@customer.example"],
    )
    # Nor is the unproven address a sender whose BCCs are logged as that member's.
    forged = ingest(
        api.ctx.sessions,
        account_id,
        "bcc",
        message("ceo@customer.example", ["partner@other.example"]),
    )
    assert (forged.outcome, forged.decision.codes) == ("rejected", ("unknown_sender",))
    # Once an admin confirms it, it is the member's address.
    api.call("POST", f"/v1/connections/{conn['id']}/verify", s["admin"], 200)
    internal = ingest(
        api.ctx.sessions,
        account_id,
        "bcc",
        message("admin@ours.example", ["ceo@customer.example"]),
    )
    assert internal.decision.codes == ("internal_only",)


def test_nobody_connects_another_users_primary_email(api: Api) -> None:
    s = _setup(api)
    err = _connect(api, s["mallory"]["token"], "Bob@Ours.example", expect=409)
    assert err["error"]["code"] == "address_already_connected"
    assert err["error"]["details"]["holder"] == {
        "kind": "user",
        "id": s["bob"]["user"]["id"],
        "email": "bob@ours.example",
    }
    # An admin cannot give it to someone else either.
    api.call(
        "POST",
        "/v1/connections",
        s["admin"],
        409,
        json={
            "address": "bob@ours.example",
            "kind": "personal",
            "user_id": s["mallory"]["user"]["id"],
        },
    )
    # The user's own primary email is theirs by being it: proven at once.
    own = _connect(api, s["bob"]["token"], "bob@ours.example")
    assert own["status"] == "active"


def test_an_address_already_connected_cannot_become_another_users_primary_email(
    api: Api,
) -> None:
    s = _setup(api)
    _connect(api, s["mallory"]["token"], "shared@ours.example")
    err = api.call("POST", "/v1/users", s["admin"], 409, json={"email": "shared@ours.example"})
    assert err["error"]["code"] == "address_already_connected"
    assert err["error"]["details"]["holder"]["id"] == s["mallory"]["user"]["id"]


def test_an_unverified_connection_is_seen_by_its_owner_and_admins_and_admins_can_remove_it(
    api: Api,
) -> None:
    s = _setup(api)
    conn = _connect(api, s["mallory"]["token"], "hold@customer.example")
    path = f"/v1/connections/{conn['id']}"
    api.call("GET", path, s["bob"]["token"], 404)
    assert api.call("GET", path, s["admin"], 200)["status"] == "unverified"
    # It holds its address (C1) ...
    _connect(api, s["bob"]["token"], "hold@customer.example", expect=409)
    # ... until an admin deletes it, though its owner is active.
    api.call("DELETE", path, s["admin"], 204)
    _connect(api, s["bob"]["token"], "hold@customer.example")


def test_only_an_admin_verifies(api: Api) -> None:
    s = _setup(api)
    conn = _connect(api, s["mallory"]["token"], "me@elsewhere.example")
    api.call("POST", f"/v1/connections/{conn['id']}/verify", s["mallory"]["token"], 403)
    out = api.call("POST", f"/v1/connections/{conn['id']}/verify", s["admin"], 200)
    assert out["status"] == "active"

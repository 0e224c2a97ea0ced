"""Every rule of §3 (C1–C7) through the API, on both databases."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from shared.db.models import Connection
from tests.conftest import Api

IMAP = {"host": "imap.acme.example", "security": "ssl", "username": "me", "password": "s3cr3t-PW!"}


def _setup(api: Api) -> dict:
    acc = api.new_account()
    admin = acc["token"]
    alice = api.new_user(admin, "alice@acme.example")
    bob = api.new_user(admin, "bob@acme.example")
    inbox = api.call(
        "POST",
        "/v1/inboxes",
        admin,
        201,
        json={"name": "Support", "member_ids": [alice["user"]["id"]]},
    )
    return {"admin": admin, "alice": alice, "bob": bob, "inbox": inbox, "acc": acc}


def test_c1_c3_address_connected_once_case_insensitively_and_409_names_holder(api: Api) -> None:
    s = _setup(api)
    alice, admin = s["alice"], s["admin"]
    personal = api.call(
        "POST",
        "/v1/connections",
        alice["token"],
        201,
        json={"address": "Alice.Work@Acme.example", "kind": "personal"},
    )
    assert personal["address"] == "alice.work@acme.example"
    assert personal["user_id"] == alice["user"]["id"] and personal["kind"] == "personal"
    # The same address as a team address: refused, naming the user who holds it.
    err = api.call(
        "POST",
        "/v1/connections",
        admin,
        409,
        json={"address": "ALICE.WORK@acme.example", "kind": "team", "inbox_id": s["inbox"]["id"]},
    )
    assert err["error"]["code"] == "address_already_connected"
    assert err["error"]["details"]["holder"] == {
        "kind": "user",
        "id": alice["user"]["id"],
        "email": "alice@acme.example",
    }
    team = api.call(
        "POST",
        "/v1/connections",
        admin,
        201,
        json={"address": "support@acme.example", "kind": "team", "inbox_id": s["inbox"]["id"]},
    )
    assert team["inbox_id"] == s["inbox"]["id"] and team["user_id"] is None
    err = api.call(
        "POST",
        "/v1/connections",
        s["bob"]["token"],
        409,
        json={"address": "Support@ACME.example", "kind": "personal"},
    )
    assert err["error"]["details"]["holder"] == {
        "kind": "inbox",
        "id": s["inbox"]["id"],
        "name": "Support",
    }
    # A user may connect several personal addresses.
    api.call(
        "POST",
        "/v1/connections",
        alice["token"],
        201,
        json={"address": "alice@acme.example", "kind": "personal"},
    )
    # Another account may connect the same address: C1 is per account.
    other = api.new_account("Beta", "b@beta.example")["token"]
    api.call(
        "POST",
        "/v1/connections",
        other,
        201,
        json={"address": "support@acme.example", "kind": "personal"},
    )


def test_c1_is_a_database_constraint(api: Api) -> None:
    s = _setup(api)
    api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        201,
        json={"address": "dup@acme.example", "kind": "personal"},
    )
    with api.ctx.sessions() as session:
        first = session.scalars(
            sa.select(Connection).where(Connection.address == "dup@acme.example")
        ).one()
        session.add(
            Connection(
                account_id=first.account_id,
                address="dup@acme.example",
                kind="personal",
                user_id=first.user_id,
            )
        )
        try:
            session.commit()
            raise AssertionError("duplicate address accepted by the database")
        except sa.exc.IntegrityError:
            session.rollback()


def test_c2_team_connection_refuses_meetings(api: Api) -> None:
    s = _setup(api)
    body = {
        "address": "sales@acme.example",
        "kind": "team",
        "inbox_id": s["inbox"]["id"],
        "meetings": True,
    }
    err = api.call("POST", "/v1/connections", s["admin"], 422, json=body)
    assert err["error"]["code"] == "team_meetings_not_allowed"
    body["meetings"] = False
    conn = api.call("POST", "/v1/connections", s["admin"], 201, json=body)
    err = api.call(
        "PATCH", f"/v1/connections/{conn['id']}", s["admin"], 422, json={"meetings": True}
    )
    assert err["error"]["code"] == "team_meetings_not_allowed"
    personal = api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        201,
        json={"address": "a2@acme.example", "kind": "personal", "meetings": True},
    )
    assert personal["meetings"] is True


def test_c3_admin_disconnects_a_deactivated_users_connection(api: Api) -> None:
    s = _setup(api)
    conn = api.call(
        "POST",
        "/v1/connections",
        s["bob"]["token"],
        201,
        json={"address": "bob.sales@acme.example", "kind": "personal"},
    )
    api.call("POST", f"/v1/connections/{conn['id']}/verify", s["admin"], 200)  # proven (C7)
    err = api.call("DELETE", f"/v1/connections/{conn['id']}", s["admin"], 403)
    assert err["error"]["code"] == "owner_active"
    api.call(
        "PATCH", f"/v1/users/{s['bob']['user']['id']}", s["admin"], 200, json={"active": False}
    )
    api.call("DELETE", f"/v1/connections/{conn['id']}", s["admin"], 204)
    # The address is free again without re-creating the user.
    api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        201,
        json={"address": "bob.sales@acme.example", "kind": "personal"},
    )


def test_c4_personal_connection_is_private(api: Api) -> None:
    s = _setup(api)
    alice, bob, admin = s["alice"], s["bob"], s["admin"]
    conn = api.call(
        "POST",
        "/v1/connections",
        alice["token"],
        201,
        json={"address": "alice.p@acme.example", "kind": "personal", "imap": IMAP},
    )
    path = f"/v1/connections/{conn['id']}"
    # Another member: 404, and absent from lists.
    assert api.call("GET", path, bob["token"], 404)["error"]["code"] == "not_found"
    assert conn["id"] not in [
        c["id"] for c in api.call("GET", "/v1/connections", bob["token"], 200)["items"]
    ]
    api.call("PATCH", path, bob["token"], 404, json={"meetings": True})
    api.call("DELETE", path, bob["token"], 404)
    # An admin sees that it exists, but not its folders, errors or IMAP settings.
    seen = api.call("GET", path, admin, 200)
    assert set(seen) == {"id", "address", "kind", "user_id", "inbox_id", "meetings", "status"}
    assert seen["address"] == "alice.p@acme.example" and seen["user_id"] == alice["user"]["id"]
    # ...and cannot change it.
    assert (
        api.call("PATCH", path, admin, 403, json={"meetings": True})["error"]["code"] == "not_owner"
    )
    # The owner sees everything but the password.
    own = api.call("GET", path, alice["token"], 200)
    assert own["imap"]["host"] == "imap.acme.example" and "password" not in own["imap"]
    assert own["folders"] == [] and own["last_error"] is None
    api.call("PATCH", path, alice["token"], 200, json={"meetings": True})
    api.call("DELETE", path, alice["token"], 204)


def test_c5_team_connection_visible_to_members_and_admins(api: Api) -> None:
    s = _setup(api)
    conn = api.call(
        "POST",
        "/v1/connections",
        s["admin"],
        201,
        json={"address": "help@acme.example", "kind": "team", "inbox_id": s["inbox"]["id"]},
    )
    path = f"/v1/connections/{conn['id']}"
    assert api.call("GET", path, s["alice"]["token"], 200)["address"] == "help@acme.example"
    api.call("GET", path, s["bob"]["token"], 404)
    # Members cannot create team connections.
    api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        403,
        json={"address": "x@acme.example", "kind": "team", "inbox_id": s["inbox"]["id"]},
    )


def test_c6_password_encrypted_never_returned_never_logged(api: Api, captured_logs) -> None:
    s = _setup(api)
    secret = "Sup3r-Secret-Imap-Passw0rd"
    captured_logs.set_level(logging.DEBUG)
    responses = []
    conn = api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        201,
        json={
            "address": "c6@acme.example",
            "kind": "personal",
            "imap": {**IMAP, "password": secret},
        },
    )
    responses.append(conn)
    path = f"/v1/connections/{conn['id']}"
    responses.append(api.call("GET", path, s["alice"]["token"], 200))
    responses.append(api.call("GET", "/v1/connections", s["alice"]["token"], 200))
    responses.append(api.call("GET", path, s["admin"], 200))
    responses.append(
        api.call("PATCH", path, s["alice"]["token"], 200, json={"imap": {"password": secret + "2"}})
    )
    for body in responses:
        assert secret not in str(body)
    with api.ctx.sessions() as session:
        row = session.get(Connection, conn["id"])
        stored = row.imap_password_enc
        raw_row = session.execute(
            sa.text("SELECT * FROM connections WHERE id = :i"), {"i": conn["id"]}
        ).one()
    assert secret not in str(tuple(raw_row))
    assert api.ctx.box.decrypt(stored) == secret + "2"
    assert secret not in captured_logs.text


def test_new_password_clears_auth_failed(api: Api) -> None:
    s = _setup(api)
    conn = api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        201,
        json={"address": "af@acme.example", "kind": "personal", "imap": IMAP},
    )
    api.call("POST", f"/v1/connections/{conn['id']}/verify", s["admin"], 200)  # proven (C7)
    with api.ctx.sessions() as session, session.begin():
        session.get(Connection, conn["id"]).status = "auth_failed"
    path = f"/v1/connections/{conn['id']}"
    api.call("PATCH", path, s["alice"]["token"], 200, json={"imap": {"host": "imap2.acme.example"}})
    assert api.call("GET", path, s["alice"]["token"], 200)["status"] == "auth_failed"
    out = api.call("PATCH", path, s["alice"]["token"], 200, json={"imap": {"password": "new-one"}})
    assert out["status"] == "pending"


def test_connection_validation_errors(api: Api) -> None:
    s = _setup(api)
    tok = s["alice"]["token"]
    for body in (
        {"address": "nope", "kind": "personal"},
        {"address": "a@acme.example", "kind": "shared"},
        {"address": "a@acme.example", "kind": "personal", "imap": {"host": "h", "security": "tls"}},
        {"address": "a@acme.example", "kind": "personal", "imap": {"host": "h", "username": "u"}},
    ):
        err = api.call("POST", "/v1/connections", tok, 422, json=body)
        assert err["error"]["code"] == "validation_error", body
    err = api.call(
        "POST",
        "/v1/connections",
        s["admin"],
        422,
        json={"address": "t@acme.example", "kind": "team", "inbox_id": 999999},
    )
    assert err["error"]["code"] == "unknown_inbox"


def test_sync_status_and_folders_shown_to_the_owner(api: Api) -> None:
    from datetime import UTC, datetime

    from shared.db.models import FolderState

    s = _setup(api)
    conn = api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        201,
        json={"address": "sync@acme.example", "kind": "personal", "imap": IMAP},
    )
    assert conn["status"] == "unverified" and conn["last_sync_at"] is None  # C7: not proven yet
    seen_by_admin = api.call("POST", f"/v1/connections/{conn['id']}/verify", s["admin"], 200)
    assert seen_by_admin["status"] == "pending" and "last_sync_at" not in seen_by_admin  # C4
    conn = api.call("GET", f"/v1/connections/{conn['id']}", s["alice"]["token"], 200)
    assert conn["status"] == "pending" and conn["last_sync_at"] is None
    with api.ctx.sessions() as session, session.begin():
        row = session.get(Connection, conn["id"])
        row.status, row.last_sync_at, row.last_error = (
            "active",
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            None,
        )
        session.add(
            FolderState(
                connection_id=conn["id"],
                name="INBOX",
                uidvalidity=7,
                last_uid=42,
                messages_synced=40,
            )
        )
    got = api.call("GET", f"/v1/connections/{conn['id']}", s["alice"]["token"], 200)
    assert got["status"] == "active" and got["last_sync_at"] == "2026-01-02T03:04:05Z"
    assert got["folders"] == [
        {"name": "INBOX", "uidvalidity": 7, "last_uid": 42, "messages_synced": 40}
    ]
    out = api.call(
        "POST",
        f"/v1/connections/{conn['id']}/sync",
        s["alice"]["token"],
        202,
        json={"since": "2026-01-01"},
    )
    assert out["since"] == "2026-01-01"
    with api.ctx.sessions() as session:
        assert session.get(Connection, conn["id"]).backfill_since.isoformat() == "2026-01-01"
    api.call("POST", f"/v1/connections/{conn['id']}/sync", s["bob"]["token"], 404, json={})
    plain = api.call(
        "POST",
        "/v1/connections",
        s["alice"]["token"],
        201,
        json={"address": "noimap@acme.example", "kind": "personal"},
    )
    assert (
        api.call("POST", f"/v1/connections/{plain['id']}/sync", s["alice"]["token"], 422, json={})[
            "error"
        ]["code"]
        == "no_imap"
    )


def test_a_connection_given_imap_later_is_pending_until_it_syncs(api: Api) -> None:
    s = _setup(api)
    tok = s["alice"]["token"]
    conn = api.call(
        "POST",
        "/v1/connections",
        tok,
        201,
        json={"address": "late@acme.example", "kind": "personal"},
    )
    assert conn["status"] == "unverified"  # C7: not proven yet
    conn = api.call("POST", f"/v1/connections/{conn['id']}/verify", s["admin"], 200)
    assert conn["status"] == "active"  # nothing to sync: nothing pending
    path = f"/v1/connections/{conn['id']}"
    out = api.call("PATCH", path, tok, 200, json={"imap": IMAP})
    assert out["status"] == "pending"  # §6: active only after its first successful cycle


def test_imap_servers_on_private_networks_are_refused_when_saved(api: Api) -> None:
    """§6 Network safety: 422 host_not_allowed, checked on what the name resolves to."""
    s = _setup(api)
    tok = s["alice"]["token"]
    names = {"intranet.acme.example": "10.1.2.3", "mail.acme.example": "93.184.216.34"}

    def resolver(host: str, port: int, *args: object, **kw: object) -> list:
        import socket

        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        if host.replace(".", "").isdigit():
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    api.ctx.extras["resolver"] = resolver
    for n, host in enumerate(("127.0.0.1", "169.254.169.254", "intranet.acme.example")):
        body = {"address": f"p{n}@acme.example", "kind": "personal", "imap": {**IMAP, "host": host}}
        err = api.call("POST", "/v1/connections", tok, 422, json=body)
        assert err["error"]["code"] == "host_not_allowed", host
        assert "10.1.2.3" not in err["error"]["message"]  # never what a name resolved to
    ok = api.call(
        "POST",
        "/v1/connections",
        tok,
        201,
        json={
            "address": "ok@acme.example",
            "kind": "personal",
            "imap": {**IMAP, "host": "mail.acme.example"},
        },
    )
    # A name that does not resolve now is saved; the poller reports host_not_found.
    api.call(
        "POST",
        "/v1/connections",
        tok,
        201,
        json={"address": "later@acme.example", "kind": "personal", "imap": IMAP},
    )
    err = api.call(
        "PATCH", f"/v1/connections/{ok['id']}", tok, 422, json={"imap": {"host": "127.0.0.1"}}
    )
    assert err["error"]["code"] == "host_not_allowed"
    # An operator who runs mail servers on a private network allows it.
    api.ctx.settings.allowed_private_networks = "10.0.0.0/8"
    api.call(
        "PATCH",
        f"/v1/connections/{ok['id']}",
        tok,
        200,
        json={"imap": {"host": "intranet.acme.example"}},
    )


def test_the_list_pages_by_keyset_newest_first_and_shows_only_what_the_caller_may_see(
    api: Api,
) -> None:
    s = _setup(api)
    alice, bob, admin = s["alice"]["token"], s["bob"]["token"], s["admin"]
    made = [
        api.call(
            "POST",
            "/v1/connections",
            alice,
            201,
            json={"address": f"a{i}@acme.example", "kind": "personal"},
        )["id"]
        for i in range(3)
    ]
    made.append(
        api.call(
            "POST",
            "/v1/connections",
            admin,
            201,
            json={"address": "team@acme.example", "kind": "team", "inbox_id": s["inbox"]["id"]},
        )["id"]
    )
    made.append(
        api.call(
            "POST",
            "/v1/connections",
            bob,
            201,
            json={"address": "b@acme.example", "kind": "personal"},
        )["id"]
    )

    def walk(token: str) -> list[int]:
        seen, before = [], None
        while True:
            query = "limit=2" + (f"&before_id={before}" if before else "")
            items = api.call("GET", f"/v1/connections?{query}", token, 200)["items"]
            if not items:
                return seen
            seen += [c["id"] for c in items]
            before = items[-1]["id"]

    assert walk(admin) == sorted(made, reverse=True)
    assert walk(alice) == sorted(made[:4], reverse=True)  # her own and her inbox's team address
    assert walk(bob) == [made[4]]

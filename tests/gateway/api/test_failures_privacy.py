"""Failures of personal-inbox mail follow C4 (§6): the owner sees their text and retries them;
admins and the operator see that they exist — stage, connection, attempts — never the text."""

from __future__ import annotations

from shared.db.engine import transaction
from shared.db.models import StoredMessage
from shared.services.failures import fail_message
from tests.conftest import OPERATOR_TOKEN, Api

SECRET = "ValueError: Subject 'Merger with Initech' from ceo@initech.example"


def _failed(api: Api, account_id: int, source: str, connection_id: int | None = None) -> int:
    with transaction(api.ctx.sessions) as s:
        row = StoredMessage(
            account_id=account_id,
            source=source,
            connection_id=connection_id,
            raw=b"Subject: Merger with Initech\r\n\r\nbody\r\n",
            raw_size=40,
            status="processing",
            attempts=3,
        )
        s.add(row)
        s.flush()
        fail_message(session=s, stored_id=row.id, stage="record", error=SECRET, attempts=3)
        return row.id


def _setup(api: Api) -> dict:
    acc = api.new_account("Privacy", "alice@priv.example")
    admin = acc["token"]
    bob = api.new_user(admin, "bob@priv.example")
    carol = api.new_user(admin, "carol@priv.example")
    bob_conn = api.call(
        "POST", "/v1/connections", bob["token"], 201,
        json={"address": "bob@priv.example", "kind": "personal"},
    )  # fmt: skip
    alice_conn = api.call(
        "POST", "/v1/connections", admin, 201,
        json={"address": "alice@priv.example", "kind": "personal"},
    )  # fmt: skip
    aid = acc["account"]["id"]
    return {
        "aid": aid,
        "admin": admin,
        "bob": bob["token"],
        "carol": carol["token"],
        "bob_conn": bob_conn["id"],
        "bob_msg": _failed(api, aid, "personal", bob_conn["id"]),
        "alice_msg": _failed(api, aid, "personal", alice_conn["id"]),
        "bcc_msg": _failed(api, aid, "bcc"),
    }


def _by_message(items: list[dict]) -> dict[int, dict]:
    return {f["stored_message_id"]: f for f in items}


def test_admins_and_the_operator_see_personal_failures_exist_but_not_their_text(
    api: Api,
) -> None:
    w = _setup(api)
    seen = _by_message(api.call("GET", "/v1/ops/failures", w["admin"], 200)["items"])
    assert set(seen) == {w["bob_msg"], w["alice_msg"], w["bcc_msg"]}
    bobs = seen[w["bob_msg"]]
    assert bobs["error"] is None and bobs["redacted"] is True
    assert (bobs["stage"], bobs["attempts"], bobs["connection_id"]) == ("record", 3, w["bob_conn"])
    assert seen[w["bcc_msg"]]["error"] == SECRET  # not personal mail: ops sees the text
    assert seen[w["alice_msg"]]["error"] == SECRET  # the admin's own personal inbox
    assert "Initech" not in str(seen[w["bob_msg"]])

    every = _by_message(api.call("GET", "/v1/ops/failures?limit=500", OPERATOR_TOKEN, 200)["items"])
    for mine in ("bob_msg", "alice_msg"):
        assert every[w[mine]]["error"] is None and every[w[mine]]["redacted"] is True
    assert every[w["bcc_msg"]]["error"] == SECRET
    # Counts still include them: they exist.
    assert api.call("GET", "/v1/ops/status", w["admin"], 200)["unresolved_failures"] == 3


def test_the_owner_lists_and_retries_their_personal_failures(api: Api) -> None:
    w = _setup(api)
    [own] = api.call("GET", "/v1/ops/failures", w["bob"], 200)["items"]
    assert own["stored_message_id"] == w["bob_msg"]
    assert own["error"] == SECRET and own["redacted"] is False
    # Another member sees none of them, and cannot retry them.
    assert api.call("GET", "/v1/ops/failures", w["carol"], 200)["items"] == []
    api.call("POST", f"/v1/ops/failures/{own['id']}/retry", w["carol"], 404)
    bcc = _by_message(api.call("GET", "/v1/ops/failures", w["admin"], 200)["items"])[w["bcc_msg"]]
    api.call("POST", f"/v1/ops/failures/{bcc['id']}/retry", w["bob"], 404)  # not his
    out = api.call("POST", f"/v1/ops/failures/{own['id']}/retry", w["bob"], 202)
    assert out["stored_message_id"] == w["bob_msg"]
    with api.ctx.sessions() as s:
        row = s.get(StoredMessage, w["bob_msg"])
        assert row is not None and row.status == "stored"
    # Members still have no ops status.
    api.call("GET", "/v1/ops/status", w["bob"], 403)

"""Every list route pages by keyset (§7 ``before_id``): walking the pages gives exactly the
list in its documented order, whatever the ties; a cursor outside the list is refused."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api
from tests.gateway.api.keyset_data import Dataset, build, conversation_order, timeline_order


def walk(api: Api, path: str, token: str, limit: int) -> list[int]:
    """Follow ``before_id`` page after page; the ids in the order the API gave them."""
    out: list[int] = []
    before = None
    sep = "&" if "?" in path else "?"
    for _ in range(1000):
        query = f"{path}{sep}limit={limit}" + (f"&before_id={before}" if before else "")
        page = api.call("GET", query, token, 200)["items"]
        out += [item["id"] for item in page]
        if len(page) < limit:
            return out
        before = page[-1]["id"]
    raise AssertionError("paging did not end")


def whole(api: Api, path: str, token: str) -> list[int]:
    sep = "&" if "?" in path else "?"
    return [i["id"] for i in api.call("GET", f"{path}{sep}limit=500", token, 200)["items"]]


def _seen_by_bob(d: Dataset, decision: dict[str, Any]) -> bool:
    if decision["private_to_user_id"] is not None:
        return decision["private_to_user_id"] == d.bob_id
    return decision["acting_user_id"] == d.bob_id or decision["inbox_id"] == d.inbox_id


def test_timelines_page_by_keyset_in_date_order(api: Api) -> None:
    d = build(api, emails=61, decisions=0, conversations=0, tag="tl")
    expected = timeline_order(d.emails)
    for path in (f"/v1/contacts/{d.contact_id}/emails", f"/v1/companies/{d.company_id}/emails"):
        assert whole(api, path, d.admin) == expected
        assert walk(api, path, d.admin, 7) == expected
    # A cursor must be an email of this list.
    other = build(api, emails=1, decisions=0, conversations=0, tag="tl2")
    path = f"/v1/contacts/{d.contact_id}/emails?before_id={other.emails[0]['id']}"
    err = api.call("GET", path, d.admin, 422)
    assert err["error"]["code"] == "unknown_before_id"


def test_decisions_page_by_keyset_under_c4(api: Api) -> None:
    d = build(api, emails=0, decisions=80, conversations=0, tag="dc")
    newest = sorted(d.decisions, key=lambda x: x["id"], reverse=True)
    admin_sees = [x["id"] for x in newest if x["private_to_user_id"] is None]
    bob_sees = [x["id"] for x in newest if _seen_by_bob(d, x)]
    assert walk(api, "/v1/decisions", d.admin, 6) == admin_sees
    assert walk(api, "/v1/decisions", d.bob, 6) == bob_sees
    assert whole(api, "/v1/decisions", d.bob) == bob_sees
    logged = [x["id"] for x in newest if _seen_by_bob(d, x) and x["outcome"] == "logged"]
    assert walk(api, "/v1/decisions?outcome=logged", d.bob, 4) == logged
    # Offsets still work, alone or after a cursor.
    assert [i["id"] for i in api.call("GET", "/v1/decisions?limit=3&offset=2", d.bob, 200)[
        "items"
    ]] == bob_sees[2:5]  # fmt: skip
    after = api.call("GET", f"/v1/decisions?limit=3&offset=1&before_id={bob_sees[3]}", d.bob, 200)
    assert [i["id"] for i in after["items"]] == bob_sees[5:8]


def test_conversations_page_by_keyset_latest_first(api: Api) -> None:
    d = build(api, emails=0, decisions=0, conversations=45, tag="cv")
    base = f"/v1/inboxes/{d.inbox_id}/conversations"
    assert walk(api, base, d.bob, 4) == conversation_order(d.conversations)
    assert whole(api, base, d.admin) == conversation_order(d.conversations)
    # By offset too, across the undated ones at the end (the pages straddle the boundary).
    by_offset = [
        c["id"]
        for offset in range(0, len(d.conversations), 3)
        for c in api.call("GET", f"{base}?limit=3&offset={offset}", d.bob, 200)["items"]
    ]
    assert by_offset == conversation_order(d.conversations)
    after = api.call("GET", f"{base}?limit=3&offset=2&before_id={by_offset[30]}", d.bob, 200)
    assert [c["id"] for c in after["items"]] == by_offset[33:36]
    open_ = [c for c in d.conversations if c["status"] == "open"]
    assert walk(api, f"{base}?status=open", d.bob, 5) == conversation_order(open_)
    mine = [c for c in d.conversations if c["assignee_id"] == d.bob_id]
    assert walk(api, f"{base}?assignee_id={d.bob_id}", d.bob, 3) == conversation_order(mine)
    closed = [c for c in d.conversations if c["status"] == "closed"]
    open_id = open_[0]["id"]
    err = api.call("GET", f"{base}?status=closed&before_id={open_id}", d.bob, 422)
    assert err["error"]["code"] == "unknown_before_id"
    assert conversation_order(closed)  # the dataset has both kinds


def test_id_ordered_lists_page_by_keyset_newest_first(api: Api) -> None:
    acc = api.new_account("Ids", "admin@ids.example")
    admin = acc["token"]
    users = [api.new_user(admin, f"u{i}@ids.example")["user"]["id"] for i in range(5)]
    contacts = [
        api.call("POST", "/v1/contacts", admin, 201, json={"email": f"c{i}@firm{i}.example"})
        for i in range(5)
    ]
    inboxes = [
        api.call("POST", "/v1/inboxes", admin, 201, json={"name": f"I{i}"})["id"] for i in range(4)
    ]
    all_users = sorted([*users, acc["admin"]["id"]], reverse=True)
    assert walk(api, "/v1/users", admin, 2) == all_users == whole(api, "/v1/users", admin)
    contact_ids = sorted((c["id"] for c in contacts), reverse=True)
    assert walk(api, "/v1/contacts", admin, 2) == contact_ids
    company_ids = sorted((c["company_id"] for c in contacts), reverse=True)
    assert walk(api, "/v1/companies", admin, 3) == company_ids
    assert walk(api, "/v1/inboxes", admin, 3) == sorted(inboxes, reverse=True)
    # A member sees their own inboxes only, in the same order.
    member = api.new_user(admin, "m@ids.example")
    for inbox_id in inboxes[1:3]:
        api.call("PATCH", f"/v1/inboxes/{inbox_id}", admin, 200,
                 json={"member_ids": [member["user"]["id"]]})  # fmt: skip
    assert walk(api, "/v1/inboxes", member["token"], 1) == sorted(inboxes[1:3], reverse=True)
    api.call("GET", "/v1/users?before_id=0", admin, 422)


def test_a_cursor_from_elsewhere_is_a_position_or_a_422(api: Api) -> None:
    """Id-ordered lists take any id as a position in their order: another account's id, or
    one that names nothing, pages this list's own items older than it (nothing of the other
    account is shown or confirmed). Lists in another order need the cursor's key from the
    list itself: an id not in it is 422 ``unknown_before_id``."""
    a = api.new_account("Here", "admin@here.example")["token"]
    b = api.new_account("There", "admin@there.example")["token"]

    def contact(token: str, n: int) -> int:
        body = {"email": f"p{n}@firm{n}.example"}
        return int(api.call("POST", "/v1/contacts", token, 201, json=body)["id"])

    older = [contact(a, 1), contact(a, 2)]
    theirs = contact(b, 3)
    newer = contact(a, 4)

    def ids(path: str) -> list[int]:
        return [i["id"] for i in api.call("GET", path, a, 200)["items"]]

    assert ids(f"/v1/contacts?before_id={theirs}") == older[::-1]
    assert ids(f"/v1/contacts?before_id={2**31 - 1}") == [newer, *older[::-1]]
    assert ids(f"/v1/decisions?before_id={theirs}") == []
    for path in (f"/v1/contacts/{newer}/emails", "/v1/inboxes/{inbox}/conversations"):
        if "{inbox}" in path:
            inbox = api.call("POST", "/v1/inboxes", a, 201, json={"name": "Sales"})["id"]
            path = path.format(inbox=inbox)
        for cursor in (theirs, 2**31 - 1):
            err = api.call("GET", f"{path}?before_id={cursor}", a, 422)
            assert err["error"]["code"] == "unknown_before_id"

"""A list page is read in a fixed number of queries, whatever its length: no query per item
while the items are shown (both databases)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tests.conftest import Api


def _queries(api: Api, path: str, token: str) -> int:
    seen: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = api.ctx.sessions.kw["bind"]
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        api.call("GET", path, token, 200)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return len(seen)


def _grows(api: Api, path: str, token: str, add: Callable[[int], Any]) -> tuple[int, int]:
    add(0)
    one = _queries(api, path, token)
    for i in range(1, 6):
        add(i)
    return one, _queries(api, path, token)


def test_inbox_and_connection_pages_cost_the_same_queries_for_one_item_or_six(api: Api) -> None:
    acc = api.new_account("Pages", "admin@pages.example")
    admin = acc["token"]
    member = api.new_user(admin, "m@pages.example")
    mid = member["user"]["id"]

    def inbox(i: int) -> None:
        body = {"name": f"I{i}", "member_ids": [mid, acc["admin"]["id"]]}
        api.call("POST", "/v1/inboxes", admin, 201, json=body)

    one, six = _grows(api, "/v1/inboxes", member["token"], inbox)
    assert one == six, (one, six)
    assert len(api.call("GET", "/v1/inboxes", member["token"], 200)["items"]) == 6
    inbox_id = api.call("GET", "/v1/inboxes", admin, 200)["items"][0]["id"]

    def connection(i: int) -> None:
        body: dict[str, Any] = {"address": f"c{i}@pages.example", "kind": "personal"}
        if i % 2:
            body = {"address": f"t{i}@pages.example", "kind": "team", "inbox_id": inbox_id}
        api.call("POST", "/v1/connections", admin, 201, json=body)

    one, six = _grows(api, "/v1/connections", admin, connection)
    assert one == six, (one, six)
    # The member sees the team addresses of their inbox, in full, and no one's personal ones.
    seen = api.call("GET", "/v1/connections", member["token"], 200)["items"]
    assert [c["kind"] for c in seen] == ["team"] * 3 and all("folders" in c for c in seen)

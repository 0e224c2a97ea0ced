"""A page deep in a large list costs what the first page does: on PostgreSQL, each list query
(captured from the API as it runs) reads its index in order — no sequential scan, no sort of
the list — and touches about a page of rows, whatever the depth (EXPLAIN ANALYZE)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.api.context import ApiContext
from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory
from tests.conftest import Api, make_settings
from tests.gateway.api.keyset_data import Dataset, build, conversation_order, timeline_order

PAGE = 50
ROWS = 8_000
DEEP = ROWS * 3 // 4
# A page, its cursor lookup and the rows a filter skips; a full scan would read ROWS.
MAX_ROWS_READ = 10 * PAGE


@pytest.fixture(scope="module")
def big(postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    settings = make_settings(postgresql_url, tmp_path_factory.mktemp("plans"))
    engine = make_engine(postgresql_url)
    ctx = ApiContext(
        settings=settings, sessions=make_session_factory(engine), box=SecretBox(settings.secret_key)
    )
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        api = Api(client, ctx)
        data = build(api, emails=ROWS, decisions=ROWS, conversations=ROWS // 3, tag="plans")
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
        yield api, data, engine
    engine.dispose()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain_page(
    api: Api, engine: sa.Engine, path: str, token: str, table: str, usable: bool = False
) -> list[dict]:
    """Run the route; EXPLAIN ANALYZE the statement that reads the page of ``table``.
    ``usable``: price other plans out, to show an index *can* serve a tiny table in order."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        api.call("GET", path, token, 200)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    page_sql = [(s, p) for s, p in seen if f"FROM {table}" in s and "LIMIT" in s]
    assert page_sql, [s for s, _ in seen]
    statement, params = page_sql[-1]
    with engine.connect() as conn:
        if usable:
            # Tiny tables: a planner rightly sorts three rows; price out every plan that does
            # not read an index in the list's order, to show such an index serves the list.
            for knob in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                conn.exec_driver_sql(f"SET LOCAL {knob} = off")
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params).scalar()
    return list(_nodes(plan[0]["Plan"]))


def _summary(nodes: list[dict]) -> str:
    """One line per plan node: type, relation, index, rows out, rows filtered away, loops."""
    return "\n".join(
        f"{n['Node Type']} {n.get('Relation Name', '')} {n.get('Index Name', '')} "
        f"rows={n.get('Actual Rows')} removed={n.get('Rows Removed by Filter', 0)} "
        f"loops={n.get('Actual Loops')}"
        for n in nodes
    )


def _assert_bounded(nodes: list[dict], table: str, index: str | tuple[str, ...]) -> None:
    text = _summary(nodes)
    scans = [n for n in nodes if n.get("Relation Name") == table]
    assert scans, text
    assert all(n["Node Type"] != "Seq Scan" for n in scans), text
    indexes = (index,) if isinstance(index, str) else index
    assert any(n.get("Index Name") in indexes for n in scans), text
    read = sum(
        (n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1)
        for n in scans
    )
    assert read <= MAX_ROWS_READ, (read, text)
    for n in nodes:
        if n["Node Type"] in ("Sort", "Incremental Sort"):
            assert n["Actual Rows"] <= 2 * PAGE, text  # merging short lists, never the list


def test_a_deep_timeline_page_reads_the_timeline_index(big: tuple) -> None:
    api, d, engine = big
    assert isinstance(d, Dataset)
    order = timeline_order(d.emails)
    deep = order[DEEP]
    for token in (d.admin, d.bob):
        for path, link in (
            (f"/v1/contacts/{d.contact_id}/emails", "email_contacts"),
            (f"/v1/companies/{d.company_id}/emails", "email_companies"),
        ):
            nodes = _explain_page(
                api, engine, f"{path}?limit={PAGE}&before_id={deep}", token, "logged_emails"
            )
            # A range of the link's timeline index, then the page's emails by primary key.
            _assert_bounded(nodes, link, f"ix_{link}_timeline")
            _assert_bounded(nodes, "logged_emails", "pk_logged_emails")
    page = api.call("GET", f"/v1/contacts/{d.contact_id}/emails?limit={PAGE}&before_id={deep}",
                    d.admin, 200)["items"]  # fmt: skip
    assert [e["id"] for e in page] == order[DEEP + 1 : DEEP + 1 + PAGE]


def test_a_deep_decisions_page_reads_two_ranges_in_id_order(big: tuple) -> None:
    api, d, engine = big
    ids = sorted((x["id"] for x in d.decisions), reverse=True)
    deep = ids[DEEP]
    # Each range the user sees is read from its own index, newest first, about a page of it
    # (``also``: where the planner may rightly walk the primary key instead — one account).
    c4, pk = "ix_decisions_account_private_id", "pk_decisions"
    for token, query, needed, also in (
        (d.admin, "", {c4}, {pk}),
        (d.admin, "outcome=skipped&", {"ix_decisions_account_private_outcome_id"}, set()),
        (d.admin, "source=bcc&", {"ix_decisions_account_private_source_id"}, set()),
        # Bob, a member: his private ones, his own acts, his inbox's.
        (d.bob, "", {"ix_decisions_acting_private_id", "ix_decisions_inbox_private_id"},
         {c4, pk}),
        # Carol's private decisions are three, the oldest: only the C4 index finds them
        # without walking the whole account.
        (d.carol, "", {c4}, set()),
    ):  # fmt: skip
        path = f"/v1/decisions?{query}limit={PAGE}&before_id={deep}"
        nodes = _explain_page(api, engine, path, token, "decisions")
        _assert_bounded(nodes, "decisions", tuple(needed | also))
        used = {n.get("Index Name") for n in nodes if n.get("Relation Name") == "decisions"}
        assert needed <= used <= needed | also, f"{path}\n{_summary(nodes)}"


def test_a_deep_conversations_page_reads_the_inbox_index(big: tuple) -> None:
    api, d, engine = big
    base = f"/v1/inboxes/{d.inbox_id}/conversations"
    for query, index, convs in (
        ("", "ix_conversations_inbox_last", d.conversations),
        ("status=open&", "ix_conversations_inbox_status_last",
         [c for c in d.conversations if c["status"] == "open"]),
        (f"assignee_id={d.bob_id}&", "ix_conversations_inbox_assignee_last",
         [c for c in d.conversations if c["assignee_id"] == d.bob_id]),
    ):  # fmt: skip
        order = conversation_order(convs)
        deep = order[len(order) * 3 // 4]
        nodes = _explain_page(
            api, engine, f"{base}?{query}limit={PAGE}&before_id={deep}", d.bob, "conversations"
        )
        _assert_bounded(nodes, "conversations", index)


def test_id_ordered_lists_are_served_by_their_indexes(big: tuple) -> None:
    api, d, engine = big
    top = 2**31 - 1
    for path, token, table, index in (
        ("/v1/users", d.admin, "users", "ix_users_account_id_id"),
        ("/v1/contacts", d.admin, "contacts", "ix_contacts_account_id_id"),
        ("/v1/companies", d.admin, "companies", "ix_companies_account_id_id"),
        ("/v1/inboxes", d.admin, "team_inboxes", "ix_team_inboxes_account_id_id"),
        ("/v1/ops/failures?all=true&", d.admin, "failures", "ix_failures_account_id_id"),
        # Unresolved ones: either account index serves (the partial one is the smaller).
        ("/v1/ops/failures?", d.admin, "failures", "ix_failures_account_"),
    ):
        sep = "" if path.endswith("&") or path.endswith("?") else "?"
        nodes = _explain_page(
            api, engine, f"{path}{sep}limit={PAGE}&before_id={top}", token, table, usable=True
        )
        text = _summary(nodes)
        assert any(n.get("Index Name", "").startswith(index) for n in nodes), text
        assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), text

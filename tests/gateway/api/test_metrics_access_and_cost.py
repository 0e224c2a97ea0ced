"""/metrics needs the operator token (unless INBOXLOG_METRICS_PUBLIC=true), and a scrape never
scans a message table: counters come from the counter table the working processes fill, live
gauges from the backlog's partial index."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from gateway.api.app import create_app
from gateway.api.context import ApiContext
from shared import counters
from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import StoredMessage
from shared.metrics import OpsCollector
from shared.services.failures import fail_message
from tests.conftest import OPERATOR_TOKEN, Api, make_settings

# Every table that grows with the mail taken in.
MESSAGE_TABLES = (
    "stored_messages", "decisions", "logged_emails", "email_participants", "email_sources",
    "email_contacts", "email_companies", "conversation_emails", "conversations",
)  # fmt: skip
BACKLOG_PREDICATE = "status IN ('stored', 'processing')"


def _no_depths() -> dict[str, int | None]:
    return {"intake": 0}


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _tables(statement: str) -> set[str]:
    words = set(re.findall(r"[a-z_]+", statement.lower()))
    return {t for t in MESSAGE_TABLES if t in words}


def test_metrics_need_the_operator_token(api: Api) -> None:
    resp = api.client.get("/metrics")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    assert resp.headers["www-authenticate"] == "Bearer"
    user = api.new_account()["token"]
    assert (
        api.client.get("/metrics", headers={"Authorization": f"Bearer {user}"}).status_code == 401
    )
    ok = api.client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert ok.status_code == 200 and "inboxlog_broker_up" in ok.text


def test_metrics_are_open_when_metrics_public(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, metrics_public=True)
    engine = make_engine(db_url)
    ctx = ApiContext(
        settings=settings, sessions=make_session_factory(engine), box=SecretBox(settings.secret_key)
    )
    try:
        with TestClient(create_app(ctx)) as client:
            resp = client.get("/metrics")
            assert resp.status_code == 200 and "inboxlog_pipeline_messages" in resp.text
    finally:
        engine.dispose()


def test_a_scrape_reads_no_message_table_but_the_backlog_index(api: Api, db_url: str) -> None:
    aid = api.new_account()["account"]["id"]
    with transaction(api.ctx.sessions) as s:
        for status in ("stored", "processing", "done", "done", "failed"):
            s.add(StoredMessage(account_id=aid, source="bcc", raw=b"x", status=status))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OpsCollector(api.ctx.sessions, _no_depths, cache_seconds=0))
    api.ctx.extras["metrics_registry"] = registry
    engine = api.ctx.sessions.kw["bind"]
    with _statements(engine) as seen:
        resp = api.client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert resp.status_code == 200
    touching = [(sql, params) for sql, params in seen if _tables(sql)]
    # The only message-table read is the backlog query, and it names the index predicate.
    assert len(touching) == 1, [sql for sql, _ in touching]
    sql, params = touching[0]
    assert _tables(sql) == {"stored_messages"}
    assert BACKLOG_PREDICATE in " ".join(sql.split())
    if db_url.startswith("postgresql"):
        # Usable by the planner: with sequential scans priced out, it reads the partial index.
        with engine.connect() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar()
        text = json.dumps(plan)
        # An index that reaches only the backlog rows: the partial one, or the (status, …)
        # index scanned on the two backlog statuses — the planner picks by statistics.
        assert '"Seq Scan"' not in text, text
        assert "ix_stored_messages_backlog" in text or (
            "ix_stored_messages_status_updated" in text and "{stored,processing}" in text
        ), text
    else:
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
        assert any("ix_stored_messages_backlog" in str(row) for row in plan), plan


def test_failures_are_counted_when_committed_and_never_when_rolled_back(api: Api) -> None:
    aid = api.new_account()["account"]["id"]
    key = (counters.FAILURES, counters.encode_labels({"stage": "gather"}))
    before = counters.PROCESS.pending().get(key, 0.0)
    with transaction(api.ctx.sessions) as s:
        row = StoredMessage(account_id=aid, source="bcc", raw=b"x", status="processing")
        s.add(row)
        s.flush()
        fail_message(session=s, stored_id=row.id, stage="gather", error="E: x", attempts=3)
        assert counters.PROCESS.pending().get(key, 0.0) == before  # not yet committed
    assert counters.PROCESS.pending().get(key, 0.0) == before + 1
    with pytest.raises(RuntimeError), transaction(api.ctx.sessions) as s:
        row = StoredMessage(account_id=aid, source="bcc", raw=b"x", status="processing")
        s.add(row)
        s.flush()
        fail_message(session=s, stored_id=row.id, stage="gather", error="E: y", attempts=3)
        raise RuntimeError("rolled back")
    assert counters.PROCESS.pending().get(key, 0.0) == before + 1


def test_the_flusher_adds_deltas_once_and_keeps_them_while_the_database_is_away(
    api: Api, tmp_path: Path
) -> None:
    mine = counters.Counters()
    counters.count_processed("forward", "logged", ["forwarded"], 0.3, counters=mine)
    away = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    mine.flush_logged(away)  # fails quietly: the delta stays pending
    assert mine.pending()
    flusher = counters.Flusher(api.ctx.sessions, mine, every=3600)
    flusher.start()
    counters.count_processed("forward", "logged", [], 0.3, counters=mine)
    flusher.stop()  # the final flush
    assert not flusher.is_alive() and mine.pending() == {}
    with api.ctx.sessions() as s:
        got = counters.read_counts(session=s, names=[counters.PROCESSED, counters.LATENCY])
    processed = dict((tuple(sorted(lb.items())), v) for lb, v in got[counters.PROCESSED])
    assert processed[(("outcome", "logged"), ("source", "forward"))] >= 2.0

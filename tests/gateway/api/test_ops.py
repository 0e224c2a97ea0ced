"""GET /v1/ops/status, /v1/ops/throughput, /v1/ops/failures (+ retry), /metrics and /ops."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from shared.counters import Counters, count_processed, count_received
from shared.db.engine import transaction
from shared.db.models import Connection, Failure, StoredMessage
from shared.metrics import OpsCollector, QueueProbe
from shared.queueing import QUEUE_INTAKE, QUEUE_OUTBOUND, TaskSender
from shared.services.failures import resolve_failures
from tests.conftest import OPERATOR_TOKEN, Api
from tests.support.counts import add_gateway_counts

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def _store(api: Api, account_id: int, status: str = "stored", **kw: Any) -> int:
    with transaction(api.ctx.sessions) as s:
        row = StoredMessage(
            account_id=account_id,
            source=kw.pop("source", "bcc"),
            raw=b"Subject: secret body\r\n\r\nsecret body text\r\n",
            raw_size=40,
            status=status,
            **kw,
        )
        s.add(row)
        s.flush()
        return row.id


def _fail(api: Api, account_id: int, stage: str = "understand", **kw: Any) -> tuple[int, int]:
    stored_id = _store(api, account_id, "failed", attempts=3)
    with transaction(api.ctx.sessions) as s:
        f = Failure(
            account_id=account_id,
            stored_message_id=stored_id,
            stage=stage,
            error="ValueError: boom",
            attempts=3,
            **kw,
        )
        s.add(f)
        s.flush()
        return f.id, stored_id


def _two_accounts(api: Api) -> tuple[dict, dict]:
    return api.new_account("A", "admin@a.example"), api.new_account("B", "admin@b.example")


def test_ops_status_counts_and_scopes_by_principal(api: Api) -> None:
    # The databases are shared by the session's tests: the operator's figures are compared
    # as differences; an admin's are exact.
    base = api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)
    a, b = _two_accounts(api)
    aid, bid = a["account"]["id"], b["account"]["id"]
    for status in ("stored", "stored", "processing", "done"):
        _store(api, aid, status)
    _fail(api, aid)
    _store(api, bid, "stored", received_at=datetime.now(UTC) - timedelta(hours=2))
    conn = api.call(
        "POST",
        "/v1/connections",
        a["token"],
        201,
        json={
            "address": "sales@a.example",
            "kind": "team",
            "inbox_id": api.call("POST", "/v1/inboxes", a["token"], 201, json={"name": "S"})["id"],
            "imap": {
                "host": "imap.a.example",
                "port": 993,
                "security": "ssl",
                "username": "sales",
                "password": "imap-pass-xyz",
            },
        },
    )
    with transaction(api.ctx.sessions) as s:
        row = s.get(Connection, conn["id"])
        assert row is not None
        row.status, row.last_sync_at = "active", datetime.now(UTC) - timedelta(seconds=90)

    op = api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)
    grew = {k: op["pipeline"][k] - base["pipeline"][k] for k in op["pipeline"]}
    assert grew == {"stored": 3, "processing": 1, "done": 1, "failed": 1}
    assert op["queues"] == [
        {"name": QUEUE_INTAKE, "depth": 0},
        {"name": QUEUE_OUTBOUND, "depth": 0},
    ]
    assert op["oldest_unprocessed_seconds"] > 7100
    assert op["unresolved_failures"] - base["unresolved_failures"] == 1
    [c] = [c for c in op["connections"] if c["account_id"] == aid]
    assert (c["id"], c["status"], c["imap"]) == (conn["id"], "active", True)
    assert 89 <= c["lag_seconds"] < 120
    assert set(op["gateway"]) == {"accepted", "rejected", "by_code"}
    assert "imap-pass-xyz" not in str(op)

    admin_a = api.call("GET", "/v1/ops/status", a["token"], 200)
    assert admin_a["unresolved_failures"] == 1
    assert admin_a["pipeline"] == {"stored": 2, "processing": 1, "done": 1, "failed": 1}
    assert admin_a["oldest_unprocessed_seconds"] < 60
    assert [x["id"] for x in admin_a["connections"]] == [conn["id"]]
    assert "gateway" not in admin_a
    admin_b = api.call("GET", "/v1/ops/status", b["token"], 200)
    assert admin_b["pipeline"]["stored"] == 1 and admin_b["connections"] == []

    member = api.new_user(a["token"], "rep@a.example")
    api.call("GET", "/v1/ops/status", member["token"], 403)
    api.call("GET", "/v1/ops/status", None, 401)
    # A member lists only the failures of their own personal connections: none here.
    assert api.call("GET", "/v1/ops/failures", member["token"], 200)["items"] == []


def test_queue_depth_reads_the_broker(api: Api) -> None:
    # The embedded broker of this test's data dir: one published task shows as depth 1.
    api.ctx.extras["queue_probe"] = QueueProbe(
        api.ctx.settings.effective_broker_url, cache_seconds=0
    )
    assert api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)["queues"][0]["depth"] == 0
    assert TaskSender(api.ctx.settings).process([1, 2, 3]) == 3
    status = api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)
    assert status["queues"] == [  # one task, a batch of ids
        {"name": QUEUE_INTAKE, "depth": 1},
        {"name": QUEUE_OUTBOUND, "depth": 0},
    ]


def test_unreachable_broker_gives_null_depth_quickly(api: Api) -> None:
    api.ctx.extras["queue_probe"] = QueueProbe("redis://127.0.0.1:1/0", timeout=0.5)
    t0 = time.monotonic()
    status = api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)
    assert time.monotonic() - t0 < 5
    assert status["queues"] == [
        {"name": QUEUE_INTAKE, "depth": None},
        {"name": QUEUE_OUTBOUND, "depth": None},
    ]
    body = api.client.get("/metrics", headers=OPERATOR).text
    assert "inboxlog_broker_up 0.0" in body
    assert "inboxlog_queue_depth{" not in body


def test_gateway_counters_add_up_across_flushes(api: Api) -> None:
    base = api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)["gateway"]
    with transaction(api.ctx.sessions) as s:
        add_gateway_counts(session=s, deltas={"250": 3, "550": 1})
    with transaction(api.ctx.sessions) as s:
        add_gateway_counts(session=s, deltas={"250": 2, "451": 4, "552": 0})
    g = api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)["gateway"]
    assert (g["accepted"] - base["accepted"], g["rejected"] - base["rejected"]) == (5, 5)
    grew = {c: n - base["by_code"].get(c, 0) for c, n in g["by_code"].items()}
    assert {c: n for c, n in grew.items() if n} == {"250": 5, "451": 4, "550": 1}


def test_failures_list_retry_and_resolution(api: Api) -> None:
    a, b = _two_accounts(api)
    aid, bid = a["account"]["id"], b["account"]["id"]
    older, older_stored = _fail(
        api, aid, stage="gather", created_at=datetime.now(UTC) - timedelta(minutes=5)
    )
    newer, newer_stored = _fail(api, aid, stage="record")
    other, _ = _fail(api, bid)

    items = api.call("GET", "/v1/ops/failures", a["token"], 200)["items"]
    assert [f["id"] for f in items] == [newer, older]  # newest first, own account only
    for query, page in (("limit=1", [newer]), (f"limit=1&before_id={newer}", [older])):
        got = api.call("GET", f"/v1/ops/failures?{query}", a["token"], 200)["items"]
        assert [f["id"] for f in got] == page  # by keyset, page by page
    assert set(items[0]) >= {"id", "stage", "error", "attempts", "created_at", "resolved_at"}
    assert items[0]["stored_message_id"] == newer_stored and items[0]["resolved_at"] is None
    every = api.call("GET", "/v1/ops/failures", OPERATOR_TOKEN, 200)["items"]
    assert {older, newer, other} <= {f["id"] for f in every}
    api.call("POST", f"/v1/ops/failures/{other}/retry", a["token"], 404)
    api.call("POST", f"/v1/ops/failures/{2**40}/retry", OPERATOR_TOKEN, 422)  # names nothing

    # With a task sender wired in, the retried message goes to the broker at once.
    api.ctx.extras["task_sender"] = TaskSender(api.ctx.settings)
    probe = QueueProbe(api.ctx.settings.effective_broker_url, cache_seconds=0)
    before = probe.depths()[QUEUE_INTAKE]
    out = api.call("POST", f"/v1/ops/failures/{older}/retry", a["token"], 202)
    assert out == {"failure_id": older, "stored_message_id": older_stored, "enqueued": True}
    assert probe.depths()[QUEUE_INTAKE] == (before or 0) + 1
    with api.ctx.sessions() as s:
        row = s.get(StoredMessage, older_stored)
        assert row is not None and (row.status, row.attempts) == ("stored", 0)
        assert row.raw  # the raw message was kept for the retry
    # A second click while it is back in the pipeline changes nothing.
    again = api.call("POST", f"/v1/ops/failures/{older}/retry", a["token"], 202)
    assert again["stored_message_id"] is None and again["enqueued"] is False
    # Still listed until the message ends done.
    assert older in [f["id"] for f in api.call("GET", "/v1/ops/failures", a["token"], 200)["items"]]

    # The record stage resolves it when the message ends done.
    with transaction(api.ctx.sessions) as s:
        s.get(StoredMessage, older_stored).status = "done"  # type: ignore[union-attr]
        resolve_failures(session=s, stored_message_ids=[older_stored])
    items = api.call("GET", "/v1/ops/failures", a["token"], 200)["items"]
    assert [f["id"] for f in items] == [newer]
    with_resolved = api.call("GET", "/v1/ops/failures?all=true", a["token"], 200)["items"]
    resolved = next(f for f in with_resolved if f["id"] == older)
    assert resolved["resolved_at"] is not None
    err = api.call("POST", f"/v1/ops/failures/{older}/retry", a["token"], 409)
    assert err["error"]["code"] == "failure_resolved"

    # Without a sender the row waits, stored, for the sweeper.
    del api.ctx.extras["task_sender"]
    out = api.call("POST", f"/v1/ops/failures/{newer}/retry", OPERATOR_TOKEN, 202)
    assert out["enqueued"] is False and out["stored_message_id"] == newer_stored
    with api.ctx.sessions() as s:
        assert (
            s.scalar(sa.select(StoredMessage.status).where(StoredMessage.id == newer_stored))
            == "stored"
        )


def test_throughput_reconstructs_backlog_per_minute(api: Api) -> None:
    a = api.new_account()
    aid = a["account"]["id"]
    # The buckets are per wall-clock minute: keep the whole test inside one minute, or the
    # server's "now" may already be in the next one and every bucket shifts by one.
    if datetime.now(UTC).second >= 45:
        time.sleep(61 - datetime.now(UTC).second)
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    m = lambda k: now - timedelta(minutes=k)  # noqa: E731
    # Before the window: one still waiting, one done long ago (not backlog).
    _store(api, aid, "stored", received_at=m(120))
    _store(api, aid, "done", received_at=m(130), processed_at=m(125))
    # In the window: two arrive 10 min ago, one is done 5 min ago, one fails 3 min ago.
    _store(api, aid, "done", received_at=m(10), processed_at=m(5))
    _store(api, aid, "failed", received_at=m(10), updated_at=m(3))
    _store(api, aid, "processing", received_at=m(1))

    items = api.call("GET", "/v1/ops/throughput?minutes=60", a["token"], 200)["items"]
    assert len(items) == 60
    by_ago = {59 - i: it for i, it in enumerate(items)}  # 0 = the current minute
    assert by_ago[59]["backlog"] == 1
    assert by_ago[10]["stored"] == 2 and by_ago[10]["backlog"] == 3
    assert by_ago[5]["processed"] == 1 and by_ago[5]["backlog"] == 2
    assert by_ago[3]["failed"] == 1 and by_ago[3]["backlog"] == 1
    assert by_ago[1]["stored"] == 1 and by_ago[0]["backlog"] == 2
    assert sum(it["stored"] for it in items) == 3
    other = api.new_account("B", "admin@b.example")
    assert all(
        it["backlog"] == 0
        for it in api.call("GET", "/v1/ops/throughput", other["token"], 200)["items"]
    )
    api.call("GET", "/v1/ops/throughput?minutes=0", a["token"], 422)


def _scrape(api: Api) -> dict[str, float]:
    resp = api.client.get("/metrics", headers=OPERATOR)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        name: float(value)
        for name, value in (
            line.rsplit(" ", 1) for line in resp.text.splitlines() if not line.startswith("#")
        )
    }


def _uncached_metrics(api: Api) -> None:
    registry = CollectorRegistry(auto_describe=False)
    probe = QueueProbe(api.ctx.settings.effective_broker_url, cache_seconds=0)
    registry.register(OpsCollector(api.ctx.sessions, probe.depths, cache_seconds=0))
    api.ctx.extras["metrics_registry"] = registry


def test_metrics_show_what_the_processes_counted_and_the_live_backlog(api: Api) -> None:
    # The session's tests share the databases: compare two scrapes.
    _uncached_metrics(api)
    before = _scrape(api)
    a = api.new_account()
    aid = a["account"]["id"]
    # What a gateway, a poller and a worker count, flushed as their flushers do.
    worker = Counters()
    count_received("bcc", 2, counters=worker)
    count_received("team", counters=worker)
    count_processed("bcc", "logged", [], 2.0, counters=worker)
    count_processed("team", "skipped", ["auto_reply"], 40.0, counters=worker)
    assert worker.flush(api.ctx.sessions) > 0
    assert worker.flush(api.ctx.sessions) == 0  # nothing new: nothing added twice
    with transaction(api.ctx.sessions) as s:
        add_gateway_counts(session=s, deltas={"250": 7, "550": 2})
    # Live state: the backlog and an unresolved failure.
    _store(api, aid, "stored")
    _store(api, aid, "processing")
    _store(api, aid, "done")  # history, not backlog: not a gauge any more
    _fail(api, aid, stage="understand")

    after = _scrape(api)
    grew = {
        'inboxlog_queue_depth{queue="intake"}': 0.0,
        'inboxlog_queue_depth{queue="outbound"}': 0.0,
        "inboxlog_broker_up": 1.0,
    }
    assert {k: after[k] for k in grew} == grew
    expect = {
        'inboxlog_messages_received_total{source="bcc"}': 2.0,
        'inboxlog_messages_received_total{source="team"}': 1.0,
        'inboxlog_messages_processed_total{outcome="logged",source="bcc"}': 1.0,
        'inboxlog_messages_processed_total{outcome="skipped",source="team"}': 1.0,
        'inboxlog_decisions_total{outcome="logged"}': 1.0,
        'inboxlog_decisions_total{outcome="skipped"}': 1.0,
        'inboxlog_decision_reasons_total{code="auto_reply",outcome="skipped"}': 1.0,
        'inboxlog_failures_unresolved{stage="understand"}': 1.0,
        'inboxlog_pipeline_messages{status="stored"}': 1.0,
        'inboxlog_pipeline_messages{status="processing"}': 1.0,
        'inboxlog_smtp_replies_total{code="250"}': 7.0,
        'inboxlog_smtp_replies_total{code="550"}': 2.0,
        'inboxlog_processing_latency_seconds_bucket{le="1.0"}': 0.0,
        'inboxlog_processing_latency_seconds_bucket{le="2.5"}': 1.0,
        'inboxlog_processing_latency_seconds_bucket{le="30.0"}': 1.0,
        'inboxlog_processing_latency_seconds_bucket{le="60.0"}': 2.0,
        'inboxlog_processing_latency_seconds_bucket{le="+Inf"}': 2.0,
        "inboxlog_processing_latency_seconds_count": 2.0,
    }
    for name, value in expect.items():
        assert after[name] - before.get(name, 0.0) == value, (name, before.get(name), after[name])
    latency_sum = "inboxlog_processing_latency_seconds_sum"
    # A float sum shared with other tests' counts: equal up to rounding.
    assert after[latency_sum] - before.get(latency_sum, 0.0) == pytest.approx(42.0)
    assert 'inboxlog_pipeline_messages{status="done"}' not in after


def test_metrics_show_imap_lag_per_connection(api: Api) -> None:
    a = api.new_account()
    inbox = api.call("POST", "/v1/inboxes", a["token"], 201, json={"name": "S"})
    conn = api.call(
        "POST",
        "/v1/connections",
        a["token"],
        201,
        json={
            "address": "s@a.example",
            "kind": "team",
            "inbox_id": inbox["id"],
            "imap": {"host": "h", "port": 993, "security": "ssl", "username": "u", "password": "p"},
        },
    )
    synced = datetime.now(UTC) - timedelta(seconds=120)
    with transaction(api.ctx.sessions) as s:
        row = s.get(Connection, conn["id"])
        row.status, row.last_sync_at = "active", synced  # type: ignore[union-attr]
    body = api.client.get("/metrics", headers=OPERATOR).text
    lines = dict(line.rsplit(" ", 1) for line in body.splitlines() if not line.startswith("#"))
    labels = (
        f'{{account_id="{a["account"]["id"]}",connection_id="{conn["id"]}",'
        'kind="team",status="active"}'
    )
    assert 119 < float(lines[f"inboxlog_imap_sync_lag_seconds{labels}"]) < 140
    stamp = float(lines[f"inboxlog_imap_last_success_timestamp_seconds{labels}"])
    assert abs(stamp - synced.timestamp()) < 1


def test_ops_page_is_served_without_external_resources(api: Api) -> None:
    resp = api.client.get("/ops")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    html = resp.text
    assert '<script src="/ops/ops.js"' in html and "http://" not in html and "https://" not in html
    js = api.client.get("/ops/ops.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    for endpoint in ("/v1/ops/status", "/v1/ops/failures", "/v1/ops/throughput", "/retry"):
        assert endpoint in js.text
    assert "https://" not in js.text

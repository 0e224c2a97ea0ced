"""The gateway's reply counts reach the API through the shared counter table, exactly once, and
wait in memory while the database is away."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.smtp.handler import GatewayStats
from shared.counters import Counters
from shared.db.engine import make_engine, make_session_factory
from tests.conftest import OPERATOR_TOKEN, Api


def _gateway(api: Api) -> dict:
    return api.call("GET", "/v1/ops/status", OPERATOR_TOKEN, 200)["gateway"]


def test_replies_are_added_once_and_kept_while_the_database_is_down(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = _gateway(api)["by_code"]
    counts = Counters()
    stats = GatewayStats(counters=counts)
    for reply in ("250 2.0.0 queued", "250 2.0.0 queued", "550 5.7.1 not allowed"):
        stats.count(reply)
    counts.flush(api.ctx.sessions)
    counts.flush(api.ctx.sessions)  # nothing new: nothing added
    by_code = _gateway(api)["by_code"]
    assert by_code["250"] - base.get("250", 0) == 2
    assert by_code["550"] - base.get("550", 0) == 1

    # The database goes away: the deltas wait in memory and are added once it is back.
    stats.count("451 4.3.0 try later")
    stats.count("250 2.0.0 queued")
    gone = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    with caplog.at_level(logging.WARNING, logger="inboxlog.counters"):
        counts.flush_logged(gone)
    assert caplog.records, "the failed flush is reported"
    assert len(counts.pending()) == 2
    counts.flush_logged(api.ctx.sessions)
    assert counts.pending() == {}
    by_code = _gateway(api)["by_code"]
    assert by_code["250"] - base.get("250", 0) == 3
    assert by_code["451"] - base.get("451", 0) == 1

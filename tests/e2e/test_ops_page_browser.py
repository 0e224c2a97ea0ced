"""The ops page in a real headless Chromium against a real ``inboxlog api`` process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Connection, Failure, StoredMessage
from tests.support.processes import free_port, inboxlog_env, start, stop, wait_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OP_TOKEN = "ilop_browser-test-operator"


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def api_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    env = inboxlog_env(
        INBOXLOG_DATABASE_URL=f"sqlite:///{tmp_path / 'inboxlog.db'}",
        INBOXLOG_HTTP_PORT=str(port),
        INBOXLOG_ADMIN_TOKEN=OP_TOKEN,
        INBOXLOG_SECRET_KEY=Fernet.generate_key().decode(),
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "inboxlog", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert migrated.returncode == 0, migrated.stderr
    log = tmp_path / "api.log"
    proc = start(["api"], env, tmp_path, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc, log)
        yield base, f"sqlite:///{tmp_path / 'inboxlog.db'}"
    finally:
        stop(proc)
    assert OP_TOKEN not in log.read_text()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="scripts/ensure-chromium installs it")
def test_ops_page_renders_failures_connections_and_charts(api_process, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, db_url = api_process
    op = {"Authorization": f"Bearer {OP_TOKEN}"}
    r = httpx.post(
        f"{base}/v1/accounts", headers=op, json={"name": "B", "admin_email": "a@b.example"}
    )
    assert r.status_code == 201, r.text
    admin = {"Authorization": f"Bearer {r.json()['token']}"}
    inbox = httpx.post(f"{base}/v1/inboxes", headers=admin, json={"name": "Support"}).json()
    conn = httpx.post(
        f"{base}/v1/connections",
        headers=admin,
        json={"address": "support@b.example", "kind": "team", "inbox_id": inbox["id"]},
    ).json()
    account_id = r.json()["account"]["id"]
    engine = make_engine(db_url)
    with transaction(make_session_factory(engine)) as s:
        now = utcnow()
        for status in ("done", "done", "stored"):
            done_at = now if status == "done" else None
            s.add(
                StoredMessage(
                    account_id=account_id,
                    source="bcc",
                    raw=b"x",
                    status=status,
                    received_at=now - timedelta(minutes=20),
                    processed_at=done_at,
                )
            )
        msg = StoredMessage(account_id=account_id, source="bcc", raw=b"x", status="failed")
        s.add(msg)
        s.flush()
        failure = Failure(
            account_id=account_id,
            stored_message_id=msg.id,
            stage="understand",
            error="ValueError: <b>not markup</b>",
            attempts=3,
        )
        s.add(failure)
        s.flush()
        failure_id = failure.id
        assert s.get(Connection, conn["id"]) is not None
    engine.dispose()

    url = f"{base}/ops#token={OP_TOKEN}"
    dom = _chromium(url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # The banner says what is wrong, at a glance.
    assert re.search(r'id="banner"[^>]*class="unhealthy"', html), html[:3000]
    assert "1 unresolved failure(s)" in html
    # The failure row, its error as text (not markup), and its Retry button with the id.
    assert f'<tr data-failure-id="{failure_id}">' in html
    assert (
        f'<button type="button" class="retry" data-failure-id="{failure_id}">Retry</button>' in html
    )
    assert "ValueError: &lt;b&gt;not markup&lt;/b&gt;" in html
    # The connection table.
    row = re.search(rf'<tr data-connection-id="{conn["id"]}">(.*?)</tr>', html)
    assert row and "support@b.example" in row.group(1) and "active" in row.group(1)
    # Both charts, with 60 per-minute points each and their series drawn.
    assert html.count('class="chart"') == 2 and html.count('data-points="60"') == 2
    assert 'data-series="backlog"' in html and 'data-series="processed"' in html
    # Arrivals 20 minutes ago, completions and the failure this minute.
    assert html.count("<rect ") >= 3
    # Counts from the status endpoint.
    assert re.search(r'id="card-done".*?class="value">2<', html, re.S)

    shot = tmp_path / "ops.png"
    res = _chromium(url, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,900")
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    # The button's target: the retry endpoint, driven directly.
    r = httpx.post(f"{base}/v1/ops/failures/{failure_id}/retry", headers=op)
    assert r.status_code == 202 and r.json()["stored_message_id"] is not None

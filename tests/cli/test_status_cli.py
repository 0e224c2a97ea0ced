"""`inboxlog status` (table, --json) and `inboxlog failures list|retry`, as processes; --watch
and Ctrl-C: test_status_watch_sigint.py."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Connection, Failure, StoredMessage
from shared.services.accounts import create_account
from tests.support.counts import add_gateway_counts
from tests.support.processes import inboxlog_env


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return inboxlog_env(
        INBOXLOG_DATABASE_URL=db_url, INBOXLOG_SECRET_KEY=Fernet.generate_key().decode()
    )


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inboxlog", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _seed(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        account, admin, _ = create_account(
            session=s, name="Cli", admin_email=f"a{now.timestamp()}@cli.example", admin_name=None
        )
        conn = Connection(
            account_id=account.id,
            address=f"box{now.timestamp()}@cli.example",
            kind="personal",
            user_id=admin.id,
            imap_host="imap.cli.example",
            status="active",
            last_sync_at=now - timedelta(minutes=3),
        )
        s.add(conn)
        ids: dict[str, int] = {"account": account.id}
        for name, age in (
            ("old", timedelta(days=2)),
            ("new1", timedelta(0)),
            ("new2", timedelta(0)),
        ):
            msg = StoredMessage(account_id=account.id, source="bcc", raw=b"x", status="failed")
            s.add(msg)
            s.flush()
            f = Failure(
                account_id=account.id,
                stored_message_id=msg.id,
                stage="understand",
                error=f"ValueError: {name}",
                attempts=3,
                created_at=now - age,
            )
            s.add(f)
            s.flush()
            ids[name], ids[f"{name}_msg"] = f.id, msg.id
        s.flush()
        ids["connection"] = conn.id
        add_gateway_counts(session=s, deltas={"250": 4})
    engine.dispose()
    return ids


def _statuses(db_url: str, *msg_ids: int) -> list[str]:
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        out = [s.get(StoredMessage, i).status for i in msg_ids]  # type: ignore[union-attr]
    engine.dispose()
    return out


def test_status_table_and_json(db_url: str, env: dict[str, str], tmp_path: Path) -> None:
    ids = _seed(db_url)
    res = _run(env, tmp_path, "status", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["queues"] == [  # the embedded broker in cwd
        {"name": "intake", "depth": 0},
        {"name": "outbound", "depth": 0},
    ]
    assert report["pipeline"]["failed"] >= 3 and report["unresolved_failures"] >= 3
    assert report["gateway"]["by_code"]["250"] >= 4
    [conn] = [c for c in report["connections"] if c["id"] == ids["connection"]]
    assert conn["status"] == "active" and 170 < conn["lag_seconds"] < 300

    table = _run(env, tmp_path, "status")
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "queues       intake 0" in out and "pipeline     stored" in out
    row = next(line for line in out.splitlines() if line.split()[:1] == [str(ids["connection"])])
    assert "active" in row and row.rstrip().endswith("@cli.example") and " 3m " in row


def test_failures_list_and_retry(db_url: str, env: dict[str, str], tmp_path: Path) -> None:
    ids = _seed(db_url)
    res = _run(env, tmp_path, "failures", "list", "--limit", "500")
    assert res.returncode == 0, res.stderr
    listed = {int(line.split()[0]) for line in res.stdout.splitlines()[1:]}
    assert {ids["old"], ids["new1"], ids["new2"]} <= listed

    one = _run(env, tmp_path, "failures", "retry", str(ids["old"]))
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "1 message(s) back in the pipeline, 1 enqueued"
    assert _statuses(db_url, ids["old_msg"]) == ["stored"]

    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    many = _run(env, tmp_path, "failures", "retry", "--since", since)
    assert many.returncode == 0, many.stderr
    assert _statuses(db_url, ids["new1_msg"], ids["new2_msg"]) == ["stored", "stored"]

    bad = _run(env, tmp_path, "failures", "retry")
    assert bad.returncode == 2 and "FAILURE_ID or --since" in bad.stderr
    missing = _run(env, tmp_path, "failures", "retry", "999999999")
    assert missing.returncode == 2 and "no such failure" in missing.stderr

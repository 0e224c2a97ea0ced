"""`inboxlog failures list` (the operator) shows that personal-inbox failures exist, never their
text (§6: failures of personal-inbox mail follow C4)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet

from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Connection, StoredMessage
from shared.services.accounts import create_account
from shared.services.failures import fail_message
from tests.support.processes import inboxlog_env

# Unique per run: the session's tests share the database, and other failures are listed too.
MARK = secrets.token_hex(6)
PERSONAL_SECRET = f"KeyError: 'Offer for ceo@{MARK}.example: Project Falcon-{MARK}'"
BCC_TEXT = f"KeyError: 'visible bcc failure text {MARK}'"


def _seed(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    stamp = datetime.now(UTC).timestamp()
    ids: dict[str, int] = {}
    with transaction(sessions) as s:
        account, admin, _ = create_account(
            session=s, name="Priv", admin_email=f"a{stamp}@priv.example", admin_name=None
        )
        conn = Connection(
            account_id=account.id, address=f"box{stamp}@priv.example", kind="personal",
            user_id=admin.id, status="active",
        )  # fmt: skip
        s.add(conn)
        s.flush()
        ids["connection"] = conn.id
        for name, source, cid, error in (
            ("personal", "personal", conn.id, PERSONAL_SECRET),
            ("bcc", "bcc", None, BCC_TEXT),
        ):
            msg = StoredMessage(
                account_id=account.id, source=source, connection_id=cid, raw=b"x",
                status="processing", attempts=3,
            )  # fmt: skip
            s.add(msg)
            s.flush()
            fail_message(session=s, stored_id=msg.id, stage="record", error=error, attempts=3)
            ids[name] = msg.id
    engine.dispose()
    return ids


def _run(db_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = inboxlog_env(
        INBOXLOG_DATABASE_URL=db_url, INBOXLOG_SECRET_KEY=Fernet.generate_key().decode()
    )
    return subprocess.run(
        [sys.executable, "-m", "inboxlog", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_failures_list_hides_the_text_of_personal_mail(db_url: str, tmp_path: Path) -> None:
    ids = _seed(db_url)
    res = _run(db_url, tmp_path, "failures", "list", "--json", "--limit", "500")
    assert res.returncode == 0, res.stderr
    rows = {r["stored_message_id"]: r for r in map(json.loads, res.stdout.splitlines())}
    personal, bcc = rows[ids["personal"]], rows[ids["bcc"]]
    assert personal["error"] is None and personal["redacted"] is True
    assert (personal["stage"], personal["connection_id"]) == ("record", ids["connection"])
    assert bcc["error"] == BCC_TEXT
    assert MARK not in res.stdout.replace(BCC_TEXT, "")

    table = _run(db_url, tmp_path, "failures", "list", "--limit", "500")
    assert table.returncode == 0, table.stderr
    assert f"Falcon-{MARK}" not in table.stdout and f"ceo@{MARK}" not in table.stdout
    line = next(x for x in table.stdout.splitlines() if f"  {ids['personal']}  " in x)
    assert f"personal mail of connection {ids['connection']}: hidden" in line
    assert f"visible bcc failure text {MARK}" in table.stdout

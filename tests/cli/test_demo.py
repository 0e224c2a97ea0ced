"""`inboxlog demo` as a newcomer runs it: embedded defaults, real processes, real SMTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import free_port, inboxlog_env


def test_demo_shows_the_whole_path(tmp_path: Path) -> None:
    env = inboxlog_env(INBOXLOG_SMTP_PORT=str(free_port()), INBOXLOG_HTTP_PORT=str(free_port()))
    out = subprocess.run(
        [sys.executable, "-m", "inboxlog", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "sent 5 messages over SMTP" in text
    for expected in (
        # Each label with its own message, however the worker ordered the processing.
        "English BCC\n    subject : Quote for 40 units of the R2 arm",
        "Auto-reply to the Sales inbox\n    subject : Automatic reply: Order 1042",
        "ken.tanaka@acme-robotics.example: created_and_logged — new_contact",
        "subject : お見積りの件（R2アーム）",
        "jane.doe@northwind-trading.example: created_and_logged — new_contact",
        "outcome : skipped (never_log)",
        "pat@rival-corp.example: skipped — never_log",
        "mika.ito@acme-robotics.example: skipped — automated",
        "amy.lee@gmail.com  (owner alice@demo-co.example; company none — free mail)",
        # The sent, tracked offer: the gateway's scanner and the customer, told apart.
        "click by ken.tanaka@acme-robotics.example: machine (scanner)",
        "open by ken.tanaka@acme-robotics.example: a person",
    ):
        assert expected in text, expected
    assert "INBOXLOG_ADMIN_TOKEN" not in text and "ilg_" not in text
    assert "/t/o/" not in out.stdout + out.stderr and "/t/c/" not in out.stdout + out.stderr
    assert (tmp_path / "inboxlog.db").exists()

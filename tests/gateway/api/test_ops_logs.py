"""JSON logs of a worker-like run: one line per processed message, and no secrets, ever (§6)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from shared.logs import configure
from tests.conftest import OPERATOR_TOKEN, Api
from tests.support.pipeline import ingest

BODY_MARKER = "BODY-MARKER-5e1c9a the confidential discount is 37 percent"
IMAP_PASSWORD = "imap-pw-Zq81-never-logged"


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The processes' own JSON log configuration, writing into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    configure("INFO", "json")
    try:
        yield buf
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def _mail(sender: str, subject: str) -> bytes:
    return (
        f"From: Alice <{sender}>\r\n"
        "To: Carol <carol@customer.example>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@acme.example>\r\n"
        "Date: Tue, 04 Mar 2025 05:06:07 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Hello Carol,\r\n{BODY_MARKER}\r\n"
    ).encode()


def test_worker_json_logs_carry_one_line_per_message_and_no_secrets(
    api: Api, json_log: io.StringIO
) -> None:
    acc = api.new_account("Acme", "alice@acme.example")
    token = acc["token"]
    api.call(
        "POST",
        "/v1/connections",
        token,
        201,
        json={
            "address": "alice@acme.example",
            "kind": "personal",
            "imap": {
                "host": "imap.acme.example",
                "port": 1,
                "security": "ssl",
                "username": "alice",
                "password": IMAP_PASSWORD,
            },
        },
    )
    api.call("GET", "/v1/account", token + "x", 401)  # a wrong token is not echoed either
    jobs = [
        ingest(api.ctx.sessions, acc["account"]["id"], "bcc", _mail("alice@acme.example", s))
        for s in ("Pricing one", "Pricing two")
    ]
    assert [j.outcome for j in jobs] == ["logged", "logged"]

    text = json_log.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert lines, "the run logged nothing"
    for secret in (BODY_MARKER, "BODY-MARKER", IMAP_PASSWORD, token, OPERATOR_TOKEN):
        assert secret not in text, secret

    for job in jobs:
        [line] = [x for x in lines if x["msg"].startswith(f"processed stored={job.stored_id} ")]
        assert (line["level"], line["logger"]) == ("info", "inboxlog.pipeline")
        assert line["stored_id"] == job.stored_id
        assert (line["source"], line["outcome"]) == ("bcc", "logged")
        duration = line.get("duration_ms")
        if duration is None:
            duration = float(re.search(r"duration_ms=([0-9.]+)", line["msg"]).group(1))  # type: ignore[union-attr]
        assert 0 < duration < 60_000
        assert line["ts"].endswith("+00:00")

"""Request bodies are bounded: 413 ``body_too_large`` in the §7 error shape, before the whole
body is read — by its Content-Length up front, or by counting a chunked body as it streams.
The rules dry run takes a whole message, so its bound is the message size limit."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.api.context import ApiContext
from gateway.api.limits import DEFAULT_BODY_LIMIT, raw_body_limit
from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory
from tests.conftest import Api, make_settings
from tests.gateway.api.live import serve

MIB = 1024 * 1024


def _too_large(body: dict) -> None:
    assert body["error"]["code"] == "body_too_large", body
    assert isinstance(body["error"]["message"], str)


def _read_response(sock: socket.socket, deadline: float) -> tuple[int, dict]:
    """Status and JSON body of one HTTP/1.1 answer (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    while len(rest) < length:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, json.loads(rest[:length])


@pytest.fixture
def live(api: Api) -> Iterator[str]:
    with serve(api.client.app) as base:  # type: ignore[arg-type]
        yield base


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body(
    api: Api, live: str
) -> None:
    admin = api.new_account()["token"]
    with _connect(live) as sock:
        # 100 MiB announced, a few bytes sent: the answer must not wait for the rest.
        sock.sendall(
            b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + admin.encode() + b"\r\n"
            b"Content-Length: " + str(100 * MIB).encode() + b'\r\n\r\n{"email": '
        )
        status, body = _read_response(sock, time.monotonic() + 30)
    assert status == 413
    _too_large(body)


def test_a_chunked_body_is_counted_while_it_streams(api: Api, live: str) -> None:
    admin = api.new_account()["token"]
    chunk = b"x" * 65536
    with _connect(live) as sock:
        sock.sendall(
            b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + admin.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        # Just over the limit, and never the terminating chunk: the server must stop on its
        # own count rather than wait for the end of the body.
        sent = 0
        try:
            while sent <= DEFAULT_BODY_LIMIT:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:  # the server may close its side once it has answered
            pass
        status, body = _read_response(sock, time.monotonic() + 30)
    assert status == 413
    _too_large(body)


def test_ordinary_routes_take_bodies_under_the_limit_and_refuse_larger(api: Api) -> None:
    admin = api.new_account()["token"]
    auth = {"Authorization": f"Bearer {admin}"}
    big = {"email": "rep@acme.example", "name": "x" * (DEFAULT_BODY_LIMIT + 1)}
    r = api.client.post("/v1/users", headers=auth, json=big)
    assert r.status_code == 413, r.text
    _too_large(r.json())
    # A body under the limit reaches the route (here: its own validation, name ≤ 200).
    r = api.client.post("/v1/users", headers=auth, json={**big, "name": "x" * 300_000})
    assert r.status_code == 422, r.text
    # A route that takes no body refuses a large one all the same.
    r = api.client.request(
        "GET", "/v1/users", headers=auth, content=b"x" * (DEFAULT_BODY_LIMIT + 1)
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def _message(size: int) -> str:
    head = "From: Ken <ken@acme.example>\r\nTo: sales@ours.example\r\nSubject: big\r\n\r\n"
    line = "y" * 76 + "\r\n"
    return head + line * ((size - len(head)) // len(line) + 1)


def test_the_rules_dry_run_takes_a_whole_message_up_to_the_message_limit(
    db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path, max_message_bytes=3 * MIB)
    engine = make_engine(db_url)
    ctx = ApiContext(
        settings=settings, sessions=make_session_factory(engine), box=SecretBox(settings.secret_key)
    )
    try:
        with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
            api = Api(client, ctx)
            admin = api.new_account()["token"]
            inbox = api.call("POST", "/v1/inboxes", admin, 201, json={"name": "Support"})
            path = f"/v1/inboxes/{inbox['id']}/rules/test"
            # 2.5 MiB of message: over the ordinary limit, under the message limit.
            ok = api.call("POST", path, admin, 200, json={"raw": _message(5 * MIB // 2)})
            assert ok["matched"] is None and ok["trace"] == []
            # Over the message limit, though the JSON body is under the route's body limit.
            raw = _message(3 * MIB + 1000)
            assert len(json.dumps({"raw": raw})) < raw_body_limit(settings.max_message_bytes)
            r = client.post(path, headers={"Authorization": f"Bearer {admin}"}, json={"raw": raw})
            assert r.status_code == 413, r.text
            _too_large(r.json())
            # Over the route's body limit: refused by the length alone.
            r = client.post(
                path,
                headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
                content=b" " * (raw_body_limit(settings.max_message_bytes) + 1),
            )
            assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    finally:
        engine.dispose()

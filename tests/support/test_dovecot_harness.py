"""Tests for the private Dovecot harness and the IMAP fault proxy themselves."""

from __future__ import annotations

import datetime as dt
import imaplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from .dovecot import DovecotServer, dovecot_server_factory
from .imap_faults import FaultProxy

USER, PASSWORD = "alice", "s3cret pass"


def make_message(i: int, body_size: int = 200) -> bytes:
    body = (f"line {i} " * (body_size // 8 + 1))[:body_size]
    return (
        f"From: Sender {i} <sender{i}@example.com>\r\n"
        f"To: {USER}@example.com\r\n"
        f"Subject: message {i}\r\n"
        f"Message-ID: <msg-{i}@example.com>\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., DovecotServer]]:
    make, cleanup = dovecot_server_factory(tmp_path)
    yield make
    cleanup()


@pytest.fixture
def server(start_server: Callable[..., DovecotServer]) -> DovecotServer:
    srv = start_server()
    srv.add_user(USER, PASSWORD)
    return srv


def login(srv: DovecotServer, port: int | None = None) -> IMAPClient:
    client = IMAPClient(srv.address[0], port=port or srv.address[1], ssl=False, timeout=10)
    client.login(USER, PASSWORD)
    return client


def test_start_is_fast_and_ports_are_private(tmp_path: Path) -> None:
    t0 = time.monotonic()
    first = DovecotServer.start(tmp_path / "a")
    elapsed = time.monotonic() - t0
    second = DovecotServer.start(tmp_path / "b")
    try:
        assert elapsed < 2.0
        assert first.address[0] == "127.0.0.1"
        assert first.port not in (143, 993)
        assert first.port != second.port
        with socket.create_connection(second.address, timeout=5) as sock:
            assert sock.recv(100).startswith(b"* OK")
        first.stop()
        assert not first.running
        with pytest.raises(OSError):
            socket.create_connection(first.address, timeout=1).close()
    finally:
        first.close()
        second.close()
    assert not first.private_root.exists()


def test_examine_fetch_roundtrip_leaves_flags_alone(server: DovecotServer) -> None:
    messages = [make_message(i) for i in range(3)]
    when = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    uids = [
        server.append(USER, "INBOX", messages[0]),
        server.append(USER, "INBOX", messages[1], flags=[r"\Seen"]),
        server.append(USER, "INBOX", messages[2], flags=[r"\Flagged"], internal_date=when),
    ]
    assert uids == [1, 2, 3]
    before = server.flags_snapshot(USER, "INBOX")
    assert before == {1: frozenset(), 2: frozenset({r"\Seen"}), 3: frozenset({r"\Flagged"})}

    client = login(server)
    try:
        info = client.select_folder("INBOX", readonly=True)
        assert info[b"EXISTS"] == 3
        assert int(info[b"UIDVALIDITY"]) == server.uidvalidity(USER, "INBOX")
        fetched = client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
    finally:
        client.logout()
    for uid, raw in zip(uids, messages, strict=True):
        assert fetched[uid][b"BODY[]"] == raw
    stored_date = fetched[3][b"INTERNALDATE"]
    assert stored_date.replace(tzinfo=stored_date.tzinfo or dt.UTC) == when
    assert server.flags_snapshot(USER, "INBOX") == before


def test_sent_folder_has_special_use_and_custom_folders(server: DovecotServer) -> None:
    server.create_folder(USER, "Archive/2024")
    uid = server.append(USER, "Archive/2024", make_message(1))
    assert uid == 1
    client = login(server)
    try:
        folders = {name: flags for flags, _sep, name in client.list_folders()}
    finally:
        client.logout()
    assert rb"\Sent" in folders["Sent"]
    assert "INBOX" in folders
    assert "Archive/2024" in folders


def test_idle_capability_present_by_default(server: DovecotServer) -> None:
    client = login(server)
    try:
        assert client.has_capability("IDLE")
        client.select_folder("INBOX", readonly=True)
        client.idle()
        server.append(USER, "INBOX", make_message(1))
        responses = client.idle_check(timeout=5)
        client.idle_done()
    finally:
        client.logout()
    assert (1, b"EXISTS") in responses


def test_idle_false_removes_idle_capability(start_server: Callable[..., DovecotServer]) -> None:
    srv = start_server(idle=False)
    srv.add_user(USER, PASSWORD)
    client = IMAPClient(*srv.address, ssl=False, timeout=10)
    try:
        assert not client.has_capability("IDLE")  # pre-login capability
        client.login(USER, PASSWORD)
        assert not client.has_capability("IDLE")  # capabilities sent with LOGIN's OK
        # Ask the authenticated session explicitly too (bypasses imapclient's cache).
        typ, data = client._imap.capability()
        caps = data[0].split()
        assert typ == "OK"
        assert b"IDLE" not in caps
        assert {b"UIDPLUS", b"SPECIAL-USE", b"CONDSTORE"} <= set(caps)
    finally:
        client.logout()


def test_reset_uidvalidity_keeps_messages(server: DovecotServer) -> None:
    raws = [make_message(i) for i in range(3)]
    for raw in raws:
        server.append(USER, "INBOX", raw)
    server.append(USER, "Sent", make_message(99))
    old_inbox = server.uidvalidity(USER, "INBOX")
    old_sent = server.uidvalidity(USER, "Sent")
    port = server.port

    new_inbox = server.reset_uidvalidity(USER, "INBOX")

    assert new_inbox != old_inbox
    assert server.port == port
    assert server.uidvalidity(USER, "Sent") == old_sent
    client = login(server)
    try:
        info = client.select_folder("INBOX", readonly=True)
        assert int(info[b"UIDVALIDITY"]) == new_inbox
        uids = client.search("ALL")
        bodies = client.fetch(uids, ["BODY.PEEK[]"])
    finally:
        client.logout()
    assert sorted(b[b"BODY[]"] for b in bodies.values()) == sorted(raws)

    assert server.reset_uidvalidity(USER, "Sent") != old_sent
    assert server.message_count(USER, "Sent") == 1


def test_restart_and_kill_keep_messages_and_port(server: DovecotServer) -> None:
    server.append(USER, "INBOX", make_message(1))
    address = server.address
    client = login(server)
    server.restart()
    assert server.address == address
    with pytest.raises((OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error)):
        client.noop()
    assert server.message_count(USER, "INBOX") == 1

    server.kill()
    assert not server.running
    server.restart()
    assert server.address == address
    assert server.message_count(USER, "INBOX") == 1


def test_wrong_password_raises_login_error(server: DovecotServer) -> None:
    client = IMAPClient(*server.address, ssl=False, timeout=10)
    try:
        with pytest.raises(LoginError):
            client.login(USER, "not the password")
    finally:
        client.shutdown()


def test_tls_imaps_and_starttls_verify_certificate(
    start_server: Callable[..., DovecotServer],
) -> None:
    srv = start_server(tls=True)
    srv.add_user(USER, PASSWORD)
    assert srv.ca_cert_path is not None and srv.ca_cert_path.exists()
    assert srv.tls_port != srv.port

    ctx = ssl.create_default_context(cafile=str(srv.ca_cert_path))
    for host in ("127.0.0.1", "localhost"):
        imaps = IMAPClient(host, port=srv.tls_port, ssl=True, ssl_context=ctx, timeout=10)
        imaps.login(USER, PASSWORD)
        assert imaps.folder_exists("INBOX")
        imaps.logout()

    plain = IMAPClient(*srv.address, ssl=False, timeout=10)
    assert plain.has_capability("STARTTLS")
    plain.starttls(ctx)
    plain.login(USER, PASSWORD)
    assert plain.folder_exists("Sent")
    plain.logout()

    untrusted = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient("127.0.0.1", port=srv.tls_port, ssl=True, ssl_context=untrusted, timeout=10)


def test_bulk_load_2000_messages(server: DovecotServer) -> None:
    messages = [make_message(i, body_size=300) for i in range(2000)]
    t0 = time.monotonic()
    assert server.bulk_load(USER, "INBOX", messages) == 2000
    server.bulk_load(USER, "Imported", messages[:10], flags=[r"\Seen"])
    load_time = time.monotonic() - t0

    assert server.message_count(USER, "INBOX") == 2000
    client = login(server)
    try:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        assert len(uids) == 2000
        sample = client.fetch([uids[0], uids[1234], uids[-1]], ["BODY.PEEK[]"])
    finally:
        client.logout()
    assert sample[uids[0]][b"BODY[]"] == messages[0]  # UIDs follow load order
    assert sample[uids[1234]][b"BODY[]"] == messages[1234]
    assert sample[uids[-1]][b"BODY[]"] == messages[-1]
    assert set(server.flags_snapshot(USER, "Imported").values()) == {frozenset({r"\Seen"})}
    # New mail keeps arriving after a bulk load, with the next UID.
    assert server.append(USER, "INBOX", make_message(5000)) == uids[-1] + 1
    assert load_time < 10


def test_fault_proxy_drop_after_bytes_cuts_fetch(server: DovecotServer) -> None:
    big = make_message(1, body_size=200_000)
    uid = server.append(USER, "INBOX", big)
    with FaultProxy(server.address) as proxy:
        client = login(server, port=proxy.port)
        client.select_folder("INBOX", readonly=True)
        proxy.drop_after_bytes(50_000)
        with pytest.raises((OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error)):
            client.fetch([uid], ["BODY.PEEK[]"])
        client.shutdown()

        proxy.pass_through()
        client = login(server, port=proxy.port)
        client.select_folder("INBOX", readonly=True)
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == big
        client.logout()


def test_fault_proxy_delay_slows_responses(server: DovecotServer) -> None:
    with FaultProxy(server.address) as proxy:
        client = login(server, port=proxy.port)
        proxy.delay(0.5)
        t0 = time.monotonic()
        client.noop()
        assert time.monotonic() - t0 >= 0.5
        proxy.pass_through()
        t0 = time.monotonic()
        client.noop()
        assert time.monotonic() - t0 < 0.5
        client.logout()


def test_append_many_returns_uids_in_order(server: DovecotServer) -> None:
    messages = [make_message(i) for i in range(1200)]
    uids = server.append_many(USER, "Sent", messages, flags=[r"\Seen"], batch_size=500)
    assert uids == list(range(1, 1201))
    assert server.message_count(USER, "Sent") == 1200
    snapshot = server.flags_snapshot(USER, "Sent")
    assert set(snapshot.values()) == {frozenset({r"\Seen"})}
    client = login(server)
    try:
        client.select_folder("Sent", readonly=True)
        body = client.fetch([uids[777]], ["BODY.PEEK[]"])[uids[777]][b"BODY[]"]
    finally:
        client.logout()
    assert body == messages[777]


def test_uidnext_is_the_next_appended_uid(server: DovecotServer) -> None:
    nxt = server.uidnext(USER, "INBOX")
    assert server.append(USER, "INBOX", make_message(1)) == nxt
    assert server.uidnext(USER, "INBOX") == nxt + 1


def test_fault_proxy_hides_uids_counts_bytes_and_keeps_commands(server: DovecotServer) -> None:
    raws = [make_message(i, body_size=5000) for i in range(3)]
    uids = [server.append(USER, "INBOX", raw) for raw in raws]
    with FaultProxy(server.address) as proxy:
        client = login(server, port=proxy.port)
        client.select_folder("INBOX", readonly=True)
        proxy.reset_counters()
        proxy.hide_uids({uids[1]})
        got = client.fetch(uids, ["BODY.PEEK[]"])
        assert sorted(got) == [uids[0], uids[2]]  # listed, but not returned
        assert client.search("ALL") == uids  # SEARCH is untouched
        shown = len(raws[0]) + len(raws[2])
        assert shown < proxy.bytes_to_client < shown + 1000  # two bodies and the chatter
        assert any(b"FETCH" in line and b"BODY.PEEK[]" in line for line in proxy.commands)
        proxy.hide_uids(set())
        assert sorted(client.fetch(uids, ["BODY.PEEK[]"])) == uids
        client.logout()

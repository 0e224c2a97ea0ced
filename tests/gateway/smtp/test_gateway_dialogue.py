"""SMTP dialogues against the gateway, asserting every reply line that matters (§6)."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.db.engine import make_engine, make_session_factory
from tests.conftest import make_settings
from tests.e2e.mail import message
from tests.support.dkim_keys import dkim_key
from tests.support.inproc_gateway import InProcessGateway
from tests.support.world import World, new_world


@pytest.fixture(scope="module")
def pg_sessions(postgresql_url: str):  # type: ignore[no-untyped-def]
    return make_session_factory(make_engine(postgresql_url))


@pytest.fixture
def world(pg_sessions) -> World:  # type: ignore[no-untyped-def]
    return new_world(pg_sessions)


def gateway(postgresql_url: str, tmp_path: Path, sessions, **kw) -> InProcessGateway:  # type: ignore[no-untyped-def]
    over = {k: kw.pop(k) for k in list(kw) if k.startswith("smtp_") or k == "max_message_bytes"}
    return InProcessGateway(
        make_settings(postgresql_url, tmp_path, **over), sessions, sender=None, **kw
    )


@pytest.fixture
def gw(postgresql_url: str, tmp_path: Path, pg_sessions) -> Iterator[InProcessGateway]:  # type: ignore[no-untyped-def]
    g = gateway(postgresql_url, tmp_path, pg_sessions, smtp_max_recipients=3)
    yield g
    g.close()


def smtp(g: InProcessGateway) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", g.port, timeout=10)
    s.ehlo("client.example")
    return s


def test_ehlo_advertises_size_8bitmime_smtputf8(gw: InProcessGateway) -> None:
    with smtp(gw) as s:
        assert {"size", "8bitmime", "smtputf8"} <= set(s.esmtp_features)
        assert "starttls" not in s.esmtp_features  # no certificate configured


def test_recipient_bound_is_452_4_5_3(gw: InProcessGateway, world: World) -> None:
    with smtp(gw) as s:
        s.mail("alice@ours.example")
        for _ in range(3):
            assert s.rcpt(world.bcc)[0] == 250
        code, msg = s.rcpt(world.bcc)
        assert (code, msg[:5]) == (452, b"4.5.3")


def test_accepted_message_is_stored_byte_for_byte_with_its_envelope(
    gw: InProcessGateway, world: World
) -> None:
    raw = message("alice@ours.example", ["ken@acme.co.jp"]).replace(b"\n", b"\r\n")
    raw += b".leading dot line\r\n" + "8bit 日本語 line\r\n".encode()
    with smtp(gw) as s:
        s.mail("bounce@ours.example")
        s.rcpt(world.bcc)
        code, msg = s.data(raw)
    assert (code, msg[:5]) == (250, b"2.0.0")
    [row] = world.stored()
    assert (row.source, row.status, row.envelope_from, row.envelope_to) == (
        "bcc",
        "stored",
        "bounce@ours.example",
        [world.bcc],
    )
    with world.sessions() as session:
        from shared.db.models import StoredMessage

        assert session.get(StoredMessage, row.id).raw == raw


def test_storage_down_is_451_4_3_0_and_nothing_claimed(
    postgresql_url, tmp_path, pg_sessions, world
) -> None:  # type: ignore[no-untyped-def]
    dead = make_session_factory(
        make_engine(
            "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
        )
    )
    g = gateway(postgresql_url, tmp_path, pg_sessions, store_sessions=dead)
    try:
        with smtp(g) as s:
            s.mail("alice@ours.example")
            assert s.rcpt(world.bcc)[0] == 250
            code, msg = s.data(message("alice@ours.example", ["ken@acme.co.jp"]))
        assert (code, msg[:5]) == (451, b"4.3.0")
        assert world.stored() == []
    finally:
        g.close()


def test_dkim_policy_valid_signature_250_forged_550(
    postgresql_url, tmp_path, pg_sessions, world
) -> None:  # type: ignore[no-untyped-def]
    world.settings(sender_verification="dkim")
    private, txt = dkim_key()
    dns = {b"sel._domainkey.ours.example.": txt}
    lookups: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        lookups.append(name)
        return dns.get(name)

    raw = message("alice@ours.example", ["ken@acme.co.jp"])
    signed = (
        dkim.sign(
            raw, b"sel", b"ours.example", private, include_headers=[b"from", b"to", b"subject"]
        )
        + raw
    )
    forged = signed.replace(b"Hello there", b"Send money now")
    g = gateway(postgresql_url, tmp_path, pg_sessions, dnsfunc=dnsfunc)
    try:
        with smtp(g) as s:
            s.mail("alice@ours.example")
            s.rcpt(world.bcc)
            assert s.data(signed)[0] == 250
            s.mail("alice@ours.example")
            s.rcpt(world.bcc)
            code, msg = s.data(forged)
            assert (code, msg[:5]) == (550, b"5.7.1")
            s.mail("alice@ours.example")
            s.rcpt(world.bcc)
            assert s.data(raw)[0] == 550  # unsigned
        assert lookups, "the injected resolver was used"
        assert len(world.stored()) == 1
    finally:
        g.close()


def test_dkim_policy_accepts_trusted_authentication_results(
    postgresql_url, tmp_path, pg_sessions, world
) -> None:  # type: ignore[no-untyped-def]
    world.settings(sender_verification="dkim", trusted_authserv_ids=["mx.ours.example"])
    g = gateway(postgresql_url, tmp_path, pg_sessions, dnsfunc=lambda *a, **k: None)
    trusted = message(
        "alice@ours.example",
        ["ken@acme.co.jp"],
        headers={
            "Authentication-Results": (
                "mx.ours.example; dkim=pass header.d=ours.example header.s=sel"
            )
        },
    )
    untrusted = message(
        "alice@ours.example",
        ["ken@acme.co.jp"],
        headers={"Authentication-Results": "mx.evil.example; dkim=pass header.d=ours.example"},
    )
    misaligned = message(
        "alice@ours.example",
        ["ken@acme.co.jp"],
        headers={"Authentication-Results": "mx.ours.example; dkim=pass header.d=other.example"},
    )
    try:
        with smtp(g) as s:
            for raw, want in ((trusted, 250), (untrusted, 550), (misaligned, 550)):
                s.mail("alice@ours.example")
                s.rcpt(world.bcc)
                assert s.data(raw)[0] == want
    finally:
        g.close()


def test_off_policy_takes_anyone_and_team_forward_address_always_does(gw, world) -> None:  # type: ignore[no-untyped-def]
    _, team_addr = world.inbox("Support", [world.admin_id])
    raw = message("customer@cust.example", ["support@ours.example"])
    with smtp(gw) as s:
        s.mail("customer@cust.example")
        s.rcpt(team_addr)
        assert s.data(raw)[0] == 250
        s.mail("customer@cust.example")
        s.rcpt(world.bcc)
        assert s.data(raw)[0] == 550
    world.settings(sender_verification="off")  # in force at once: no reload to wait for
    with smtp(gw) as s:
        s.mail("customer@cust.example")
        s.rcpt(world.bcc)
        assert s.data(raw)[0] == 250
    assert [r.source for r in world.stored()] == ["team", "bcc"]


def test_client_rate_limit_is_421_4_7_0(postgresql_url, tmp_path, pg_sessions, world) -> None:  # type: ignore[no-untyped-def]
    g = gateway(postgresql_url, tmp_path, pg_sessions, smtp_rate_per_minute=2)
    try:
        with smtp(g) as s:
            assert s.mail("a@x.example")[0] == 250
            s.rset()
            assert s.mail("a@x.example")[0] == 250
            s.rset()
            code, msg = s.mail("a@x.example")
            assert (code, msg[:5]) == (421, b"4.7.0")
    finally:
        g.close()


def test_garbage_gets_5xx_and_the_gateway_keeps_serving(gw: InProcessGateway, world: World) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        f = sock.makefile("rwb")
        f.readline()
        for line, code in (
            (b"BOGUS\r\n", b"500"),
            (b"MAIL FROM:<a@b.example>\r\n", b"503"),
            (b"EHLO x\r\n", b"250"),
            (b"RCPT TO:<x@y.example>\r\n", b"503"),
            (b"X" * 5000 + b"\r\n", b"500"),
        ):
            f.write(line)
            f.flush()
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            assert reply[:3] == code, (line[:20], reply)
    with smtp(gw) as s:
        assert s.noop()[0] == 250


def _cert(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_when_a_certificate_is_configured(
    postgresql_url, tmp_path, pg_sessions, world
) -> None:  # type: ignore[no-untyped-def]
    cert, key = _cert(tmp_path)
    g = gateway(
        postgresql_url, tmp_path, pg_sessions, smtp_tls_cert=str(cert), smtp_tls_key=str(key)
    )
    try:
        with smtplib.SMTP("localhost", g.port, timeout=10) as s:
            s.ehlo()
            assert "starttls" in s.esmtp_features
            ctx = ssl.create_default_context(cafile=str(cert))
            s.starttls(context=ctx)
            s.ehlo()
            s.mail("alice@ours.example")
            s.rcpt(world.bcc)
            assert s.data(message("alice@ours.example", ["ken@acme.co.jp"]))[0] == 250
    finally:
        g.close()


def test_idle_client_is_dropped(postgresql_url, tmp_path, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    g = gateway(postgresql_url, tmp_path, pg_sessions, smtp_idle_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as sock:
            sock.recv(1024)
            start = time.monotonic()
            rest = sock.recv(1024)
            while rest:
                rest = sock.recv(1024)
            assert time.monotonic() - start < 4
    finally:
        g.close()


def test_graceful_shutdown_finishes_a_transaction_in_flight(
    postgresql_url, tmp_path, pg_sessions, world
) -> None:  # type: ignore[no-untyped-def]
    import threading

    g = gateway(postgresql_url, tmp_path, pg_sessions)
    s = smtp(g)
    s.mail("alice@ours.example")
    s.rcpt(world.bcc)
    closer = threading.Thread(target=g.close, kwargs={"drain_timeout": 10})
    closer.start()
    time.sleep(0.3)
    # The listener is closed, but the open transaction completes.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.port), timeout=1)
    code, _ = s.data(message("alice@ours.example", ["ken@acme.co.jp"]))
    s.close()
    closer.join(15)
    assert code == 250 and len(world.stored()) == 1

"""One connection's sync thread against servers that misbehave on purpose (§6): a name that
resolves to a private address is never dialled, ``last_error`` never carries the server's
words, a server that drops us right after login is retried more slowly each time, throttling
hints are honoured and capped, and logins a poller starts together are staggered.

The retry schedule is checked through the thread's ``pause`` hook (called instead of waiting)
and an injected random source and clock: nothing here sleeps through a backoff.
"""

from __future__ import annotations

import itertools
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory, transaction
from shared.db.models import Connection
from shared.netsafety import NOT_ALLOWED_SENTENCE, parse_networks
from tests.support.imap_faults import FakeImapServer, answer_basics
from tests.support.world import new_world
from worker.imap.backoff import HEALTHY_AFTER_SECONDS, STAGGER_SECONDS
from worker.imap.poller import Poller
from worker.imap.session import ConnectionSync, PollerConfig

BANNER = b"secret-internal-banner"
LOOPBACK = parse_networks("127.0.0.0/8")
OK_GREETING = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n"
_seq = itertools.count(1)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key().decode())


def connection(sessions: sessionmaker[Session], box: SecretBox, host: str, port: int) -> int:
    """A personal connection row written directly (no save-time host check: the connect-time
    check is what these tests are about)."""
    world = new_world(sessions)
    with transaction(sessions) as s:
        c = Connection(
            account_id=world.account_id,
            address=f"me{next(_seq)}@ours.example",
            kind="personal",
            user_id=world.admin_id,
            status="pending",
            imap_host=host,
            imap_port=port,
            imap_security="none",
            imap_username="me",
            imap_password_enc=box.encrypt("pw"),
        )
        s.add(c)
        s.flush()
        return c.id


def row(sessions: sessionmaker[Session], cid: int) -> Connection:
    with sessions() as s:
        c = s.get(Connection, cid)
        assert c is not None
        return c


def resolving(name: str, addr: str) -> Callable[..., list[tuple[Any, ...]]]:
    def getaddrinfo(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        if host != name:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port))]

    return getaddrinfo


def run_until(
    sessions: sessionmaker[Session],
    box: SecretBox,
    cid: int,
    config: PollerConfig,
    *,
    pauses: int,
    clock: Callable[[], float] | None = None,
    start_delay: float = 0.0,
    on_pause: Callable[[float], None] | None = None,
) -> list[float]:
    """Run the connection's thread until it has paused ``pauses`` times; the waits asked for."""
    waits: list[float] = []
    done = threading.Event()

    def pause(seconds: float) -> None:
        waits.append(seconds)
        if on_pause is not None:
            on_pause(seconds)
        if len(waits) >= pauses:
            sync.stop()
            done.set()

    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    sync = ConnectionSync(
        cid,
        sessions=sessions,
        box=box,
        owner="test",
        config=config,
        on_stored=lambda ids: None,
        start_delay=start_delay,
        rng=random.Random(7),
        pause=pause,
        **extra,
    )
    sync.start()
    sync.join(timeout=60)
    assert not sync.is_alive(), "the sync thread did not stop"
    return waits


@pytest.mark.parametrize("target", ["127.0.0.1", "169.254.169.254"])
def test_a_name_resolving_to_a_private_address_is_never_dialled(
    sessions: sessionmaker[Session], box: SecretBox, target: str
) -> None:
    """Saved with a name; at connect time the name resolves to loopback (or the cloud metadata
    address): the listener there sees no connection, and the connection says why in our
    words. Allowing loopback, the same connection does reach it."""
    with FakeImapServer(OK_GREETING, answer_basics) as server:
        addr = "127.0.0.1" if target == "127.0.0.1" else target
        cid = connection(sessions, box, "imap.rebind.example", server.port)
        config = PollerConfig(resolver=resolving("imap.rebind.example", addr))
        run_until(sessions, box, cid, config, pauses=2)
        assert server.accepted == 0
        c = row(sessions, cid)
        assert (c.status, c.last_error) == ("error", f"host_not_allowed: {NOT_ALLOWED_SENTENCE}")
        if target == "127.0.0.1":
            allowed = PollerConfig(
                resolver=resolving("imap.rebind.example", addr), allowed_networks=LOOPBACK
            )
            run_until(sessions, box, cid, allowed, pauses=1)
            assert server.accepted >= 1


def _drop_at_login(tag: bytes, command: bytes) -> bytes | None:
    return None if command.startswith(b"LOGIN") else answer_basics(tag, command)


def _bye_at_login(tag: bytes, command: bytes) -> bytes | None:
    if command.startswith(b"LOGIN"):
        return b"* BYE [UNAVAILABLE] " + BANNER + b"\r\n"
    return answer_basics(tag, command)


def _bye_after_login(tag: bytes, command: bytes) -> bytes | None:
    if command.startswith((b"CAPABILITY", b"LOGIN")):
        return answer_basics(tag, command)
    return b"* BYE " + BANNER + b" closing\r\n"


@pytest.mark.parametrize(
    ("greeting", "respond", "category"),
    [
        (b"* BYE " + BANNER + b"\r\n", None, "protocol_error"),
        (b"SSH-2.0-OpenSSH_9.6 " + BANNER + b"\r\n", None, "protocol_error"),
        (b"HTTP/1.1 400 Bad Request\r\nServer: " + BANNER + b"\r\n\r\n", None, "protocol_error"),
        (
            OK_GREETING,
            lambda tag, cmd: answer_basics(tag, cmd, login=b"NO " + BANNER),
            "auth_failed",
        ),
        (OK_GREETING, _bye_after_login, "connection_lost"),
        # Dropped during LOGIN: imapclient calls that a LoginError, but it says nothing about
        # the password, so it must not stop retries the way auth_failed does.
        (OK_GREETING, _drop_at_login, "connection_lost"),
        (OK_GREETING, _bye_at_login, "connection_lost"),
    ],
)
def test_last_error_is_our_sentence_never_the_servers_bytes(
    sessions: sessionmaker[Session],
    box: SecretBox,
    caplog: pytest.LogCaptureFixture,
    greeting: bytes,
    respond: Any,
    category: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="inboxlog")
    with FakeImapServer(greeting, respond) as server:
        cid = connection(sessions, box, "127.0.0.1", server.port)
        config = PollerConfig(allowed_networks=LOOPBACK)
        if category == "auth_failed":  # no retry at all: the thread ends by itself
            run_until(sessions, box, cid, config, pauses=99)
        else:
            run_until(sessions, box, cid, config, pauses=1)
        assert server.accepted >= 1
    c = row(sessions, cid)
    assert c.status == ("auth_failed" if category == "auth_failed" else "error")
    assert c.last_error is not None and c.last_error.startswith(f"{category}: ")
    assert BANNER.decode() not in c.last_error
    assert BANNER.decode() not in caplog.text  # nor in what the poller logs


def _drop_after_login(tag: bytes, command: bytes) -> bytes | None:
    if command.startswith((b"CAPABILITY", b"LOGIN")):
        return answer_basics(tag, command)
    return None  # the first command after login: the server hangs up


def test_a_server_dropping_us_soon_after_login_is_retried_more_slowly_each_time(
    sessions: sessionmaker[Session], box: SecretBox
) -> None:
    with FakeImapServer(OK_GREETING, _drop_after_login) as server:
        cid = connection(sessions, box, "127.0.0.1", server.port)
        waits = run_until(sessions, box, cid, PollerConfig(allowed_networks=LOOPBACK), pauses=9)
        assert server.accepted == 9  # one login per attempt, never a burst
    assert 2.0 <= waits[0] <= 2.4
    assert all(b > a * 1.5 for a, b in itertools.pairwise(waits[:7])), waits
    assert 240 <= max(waits) <= 300  # 2 s → 5 min
    assert row(sessions, cid).last_error == (
        "connection_lost: the connection to the server was lost"
    )


def test_after_a_healthy_session_the_schedule_starts_again(
    sessions: sessionmaker[Session], box: SecretBox
) -> None:
    """Sessions that lived past HEALTHY_AFTER_SECONDS before failing (the injected clock says
    so) count as healthy: every reconnect waits about 2 s, never more."""
    ticks = itertools.count(0, HEALTHY_AFTER_SECONDS + 1)
    with FakeImapServer(OK_GREETING, _drop_after_login) as server:
        cid = connection(sessions, box, "127.0.0.1", server.port)
        waits = run_until(
            sessions,
            box,
            cid,
            PollerConfig(allowed_networks=LOOPBACK),
            pauses=5,
            clock=lambda: float(next(ticks)),
        )
        assert server.accepted == 5
    assert all(2.0 <= w <= 2.4 for w in waits), waits


@pytest.mark.parametrize(
    ("login", "after_login", "expected"),
    [
        # Exchange Online's throttling answer, at LOGIN: not a verdict on the password.
        (
            b"NO [THROTTLED] Request is throttled. Suggested Backoff Time: 120000 milliseconds",
            None,
            120,
        ),
        (b"BAD Request is throttled. Suggested Backoff Time: 99999999 milliseconds", None, 900),
        (b"NO [UNAVAILABLE] try later", None, None),
        # Gmail's daily limit, on the first command after login.
        (b"OK LOGIN done", b"NO [OVERQUOTA] Account exceeded command or bandwidth limits.", 900),
        (b"OK LOGIN done", b"NO [THROTTLED] slow down", 300),
    ],
)
def test_server_hints_are_honoured_capped_at_15_minutes(
    sessions: sessionmaker[Session],
    box: SecretBox,
    login: bytes,
    after_login: bytes | None,
    expected: float | None,
) -> None:
    def respond(tag: bytes, command: bytes) -> bytes | None:
        if command.startswith((b"CAPABILITY", b"LOGIN", b"LOGOUT")):
            return answer_basics(tag, command, login=login)
        return tag + b" " + (after_login or b"BAD unexpected") + b"\r\n"

    with FakeImapServer(OK_GREETING, respond) as server:
        cid = connection(sessions, box, "127.0.0.1", server.port)
        [wait] = run_until(sessions, box, cid, PollerConfig(allowed_networks=LOOPBACK), pauses=1)
        assert server.accepted == 1
    c = row(sessions, cid)
    assert c.status == "error"  # retried later, never auth_failed
    if expected is None:
        assert 2.0 <= wait <= 2.4
        assert c.last_error == "server_error: the server did not accept a login just now"
    else:
        assert expected <= wait <= min(900, expected * 1.1), wait
        assert c.last_error is not None and c.last_error.startswith("throttled: ")
        assert "Suggested" not in c.last_error and "Account exceeded" not in c.last_error


def test_the_first_login_waits_for_its_start_delay(
    sessions: sessionmaker[Session], box: SecretBox
) -> None:
    with FakeImapServer(OK_GREETING, _drop_after_login) as server:
        cid = connection(sessions, box, "127.0.0.1", server.port)
        seen: list[int] = []
        waits = run_until(
            sessions,
            box,
            cid,
            PollerConfig(allowed_networks=LOOPBACK),
            pauses=2,
            start_delay=1.25,
            on_pause=lambda _: seen.append(server.accepted),
        )
    assert waits[0] == 1.25 and seen[0] == 0  # nothing dialled before the delay


class _Recorder:
    """Stands in for ConnectionSync: records the start delay the poller gave it."""

    made: ClassVar[list[tuple[int, float]]] = []
    in_sync = False
    control_version = 0

    def __init__(self, cid: int, *, start_delay: float, **_: Any) -> None:
        self.cid, self.start_delay = cid, start_delay
        _Recorder.made.append((cid, start_delay))

    def hint(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return True


def test_logins_taken_together_are_staggered_with_jitter(
    sessions: sessionmaker[Session], box: SecretBox
) -> None:
    """A poller starting (after a restart) with many free connections starts their logins one
    slot apart, each at a random point of its slot — never all at once."""
    cids = [connection(sessions, box, "imap.example.com", 993) for _ in range(12)]
    _Recorder.made = []
    poller = Poller(
        sessions,
        box,
        on_stored=lambda ids: None,
        rng=random.Random(3),
        sync_factory=_Recorder,
    )
    try:
        poller.scan()
    finally:
        poller.shutdown()  # gives the leases back
    taken = dict(_Recorder.made)
    assert set(cids) <= set(taken)
    delays = [d for _, d in _Recorder.made]
    slot = min(STAGGER_SECONDS, 30.0 / len(delays))
    for k, d in enumerate(delays):
        assert k * slot <= d < (k + 1) * slot
    offsets = {round(d - k * slot, 6) for k, d in enumerate(delays)}
    assert len(offsets) == len(delays)  # jitter: not the same point of every slot

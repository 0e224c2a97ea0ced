"""aiosmtpd builds each connection's command, AUTH and hook tables from ``dir()``; our protocol
and handlers narrow ``dir()`` to the names it looks for (gateway/smtp/hooks.py). The tables must
be exactly those a full ``dir()`` gives, or a command, an AUTH mechanism or a hook would vanish."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.smtp.handler import IntakeHandler
from gateway.smtp.ratelimit import RateLimiter
from gateway.smtp.server import IntakeSMTP
from gateway.smtp.submission import SubmissionHandler, SubmissionSMTP
from tests.gateway.smtp.test_transcripts import FakeDirectory, FakeStore


def _full_dir(self: object) -> list[str]:
    return object.__dir__(self)


class FullIntakeSMTP(IntakeSMTP):
    __dir__ = _full_dir


class FullSubmissionSMTP(SubmissionSMTP):
    __dir__ = _full_dir


class FullIntakeHandler(IntakeHandler):
    __dir__ = _full_dir


class FullSubmissionHandler(SubmissionHandler):
    __dir__ = _full_dir


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _intake_handler(cls: type[IntakeHandler]) -> IntakeHandler:
    return cls(
        directory=FakeDirectory(),
        store=FakeStore(),
        enqueuer=None,
        max_recipients=10,
        client_limiter=RateLimiter(0),
        account_limiter=RateLimiter(0),
    )


def _submission_handler(cls: type[SubmissionHandler]) -> SubmissionHandler:
    return cls(sessions=None, queue=None, max_recipients=10, max_bytes=1 << 20)  # type: ignore[arg-type]


def _tables(protocol: Any) -> tuple[set[str], set[tuple[str, bool]], set[str]]:
    return (
        set(protocol._smtp_methods),
        {(name, impl.is_builtin) for name, impl in protocol._auth_methods.items()},
        set(protocol._handle_hooks),
    )


def test_the_intake_protocol_builds_the_tables_a_full_dir_gives(
    loop: asyncio.AbstractEventLoop,
) -> None:
    kwargs: dict[str, Any] = {"connections": Counter(), "max_per_client": 5, "loop": loop}
    narrow = IntakeSMTP(_intake_handler(IntakeHandler), **kwargs)
    full = FullIntakeSMTP(_intake_handler(FullIntakeHandler), **kwargs)
    assert _tables(narrow) == _tables(full)
    commands, _, hooks = _tables(narrow)
    assert {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT", "NOOP"} <= commands
    assert {"MAIL", "RCPT", "DATA", "RSET", "PROXY", "exception"} <= hooks
    assert len(dir(narrow)) < len(object.__dir__(narrow)) / 3  # the point: few names to read


def test_the_submission_protocol_keeps_its_auth_mechanisms_and_hooks(
    loop: asyncio.AbstractEventLoop,
) -> None:
    kwargs: dict[str, Any] = {
        "connections": Counter(),
        "max_per_client": 5,
        "loop": loop,
        "implicit_tls": True,
    }
    narrow = SubmissionSMTP(_submission_handler(SubmissionHandler), **kwargs)
    full = FullSubmissionSMTP(_submission_handler(FullSubmissionHandler), **kwargs)
    assert _tables(narrow) == _tables(full)
    _, mechanisms, hooks = _tables(narrow)
    assert {"PLAIN", "LOGIN"} <= {name for name, _ in mechanisms}
    assert {"MAIL", "RCPT", "DATA"} <= hooks

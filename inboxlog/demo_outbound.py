"""The demo's sent, tracked message (§9): Alice sends an offer through inboxlog to a customer,
whose "mail server" is a small SMTP server in the demo process; the customer opens it (a
person) and their mail gateway's link scanner clicks it at once (a machine) — told apart."""

from __future__ import annotations

import email
import email.message
import email.policy
import re
import socket
import time
from typing import Any

import click
import httpx
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.crypto import SecretBox
from shared.db.engine import transaction
from shared.db.models import Outbox, TrackingEvent
from shared.principal import Principal
from shared.queueing import TaskSender
from shared.services import connections, outbound

# Where the demo's "customer mail server" lives; the demo lets user-named servers be here.
DEMO_NETWORK = "127.0.0.0/8"
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)
HTML = (
    "<p>Dear Ken,</p><p>here is our <a href='https://demo-co.example/offer/r2'>offer for the R2 "
    "arm</a>.</p><p>Alice</p>"
)


class _Inbox:
    """The customer's mail server: accepts everything, keeps it in memory."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 2.0.0 OK"


def start_customer_server() -> tuple[Controller, int]:
    with socket.socket() as probe:  # aiosmtpd's Controller needs a port number up front
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(_Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port


def send_tracked(
    sessions: sessionmaker[Session], settings: Settings, account_id: int, alice_id: int
) -> None:
    echo = click.echo
    server, port = start_customer_server()
    try:
        alice = Principal("user", account_id, alice_id, "admin")
        box = SecretBox(settings.secret_key)
        base = settings.public_url.rstrip("/")
        with transaction(sessions) as s:
            connections.create_connection(
                session=s, principal=alice, box=box, address="alice@demo-co.example",
                kind="personal", smtp={"host": "127.0.0.1", "port": port, "security": "none"},
            )  # fmt: skip
            row = outbound.send_email(
                session=s, principal=alice, logging_domain=settings.logging_domain,
                tracking_url=lambda kind, token: f"{base}/t/{kind}/{token}",
                max_bytes=settings.max_message_bytes, sender="alice@demo-co.example",
                to=["Ken Tanaka <ken.tanaka@acme-robotics.example>"], subject="Our offer",
                text="Our offer: https://demo-co.example/offer/r2", html=HTML, track=True,
            )  # fmt: skip
            outbox_id = row.id
        TaskSender(settings).deliver([outbox_id])
        echo("\nSending a tracked offer from alice@demo-co.example through inboxlog ...")
        _wait_sent(sessions, outbox_id)
        handler: _Inbox = server.handler
        html = _html_of(handler.messages[-1])
        pixel = re.search(r'src="([^"]+/t/o/[^"]+)"', html)
        link = re.search(r'href="([^"]+/t/c/[^"]+)"', html)
        if pixel is None or link is None:
            raise click.ClickException("the tracked offer arrived without its pixel and link")
        with httpx.Client(timeout=10, follow_redirects=False) as http:
            http.get(link.group(1))  # the customer's gateway scans the link on arrival
            http.get(pixel.group(1), headers={"User-Agent": BROWSER})  # Ken reads it
        with sessions() as s:
            events = list(
                s.scalars(
                    sa.select(TrackingEvent)
                    .where(TrackingEvent.outbox_id == outbox_id)
                    .order_by(TrackingEvent.id)
                )
            )
        echo("  opens and clicks of the offer:")
        for e in events:
            who = f"machine ({e.reason})" if e.machine else "a person"
            echo(f"    - {e.type} by {e.recipient}: {who}")
    finally:
        server.stop()


def _wait_sent(sessions: sessionmaker[Session], outbox_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as s:
            status = s.scalar(sa.select(Outbox.status).where(Outbox.id == outbox_id))
        if status == "sent":
            return
        time.sleep(0.2)
    raise click.ClickException("the tracked offer was not delivered in time")


def _html_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    part = msg.get_body(("html",))
    return str(part.get_content()) if part is not None else ""

"""Assembles and runs the gateway: directory refresh, group-commit store, enqueuer, server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

from sqlalchemy.orm import Session, sessionmaker

from gateway.smtp.directory import Directory
from gateway.smtp.handler import IntakeHandler
from gateway.smtp.ratelimit import RateLimiter
from gateway.smtp.server import GatewayServer
from gateway.smtp.store import GroupCommitStore
from gateway.smtp.verify import DnsFunc
from shared.config import Settings
from shared.queueing import Enqueuer, TaskSender

log = logging.getLogger("inboxlog.gateway")

REFRESH_SECONDS = 2.0


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.smtp_tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key or None)
    return ctx


def build_gateway(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    sender: TaskSender | None,
    dnsfunc: DnsFunc | None = None,
    port: int | None = None,
) -> tuple[GatewayServer, Directory, GroupCommitStore, Enqueuer | None]:
    directory = Directory(sessions, settings.logging_domain)
    store = GroupCommitStore(sessions)
    enqueuer = Enqueuer(sender) if sender is not None else None
    handler = IntakeHandler(
        directory=directory,
        store=store,
        enqueuer=enqueuer,
        max_recipients=settings.smtp_max_recipients,
        client_limiter=RateLimiter(settings.smtp_rate_per_minute),
        account_limiter=RateLimiter(settings.smtp_account_rate_per_minute),
        dnsfunc=dnsfunc,
    )
    server = GatewayServer(
        handler,
        host=settings.smtp_host,
        port=settings.smtp_port if port is None else port,
        max_message_bytes=settings.max_message_bytes,
        idle_timeout=settings.smtp_idle_timeout,
        tls_context=tls_context(settings),
        max_connections_per_client=settings.smtp_max_connections_per_client,
    )
    return server, directory, store, enqueuer


async def _refresh_forever(directory: Directory) -> None:
    while True:
        await asyncio.to_thread(directory.refresh)
        await asyncio.sleep(REFRESH_SECONDS)


async def serve(settings: Settings, sessions: sessionmaker[Session], sender: TaskSender) -> None:
    server, directory, store, enqueuer = build_gateway(settings, sessions, sender=sender)
    await asyncio.to_thread(directory.refresh)
    await server.start()
    refresher = asyncio.create_task(_refresh_forever(directory))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing transactions in flight")
    await server.drain_and_stop()
    refresher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refresher
    await asyncio.to_thread(store.close)
    if enqueuer is not None:
        await asyncio.to_thread(enqueuer.close)

"""Assembles and runs the gateway: directory, group-commit store, enqueuer, server, counters."""

from __future__ import annotations

import asyncio
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
from shared import counters
from shared.config import ConfigError, Settings
from shared.db.engine import make_engine, make_session_factory
from shared.networks import Networks
from shared.queueing import Enqueuer, TaskSender

log = logging.getLogger("inboxlog.gateway")

# SMTP intake's tasks: up to 100 messages gathered for up to 0.1 s. A worker spends about a
# third less CPU per message in batches of 60 than of 20 (bench/intake), and a BCC is logged
# at most 0.1 s later for it. Bigger batches share more rows between a killed worker's
# redelivered task and the sweeper's re-send: the claims' owners keep them from being
# processed twice (worker/pipeline/claim.py).
INTAKE_BATCH = 100
INTAKE_LINGER = 0.1


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.smtp_tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key or None)
    return ctx


def trusted_proxies(settings: Settings) -> Networks | None:
    """The load balancers whose PROXY header names the client, when the protocol is on."""
    if not settings.smtp_proxy_protocol:
        return None
    networks = Networks.parse(settings.smtp_trusted_proxies)
    if not networks:
        raise ConfigError(
            "INBOXLOG_SMTP_PROXY_PROTOCOL=true needs INBOXLOG_SMTP_TRUSTED_PROXIES (CIDRs of the "
            "load balancers allowed to name clients)"
        )
    return networks


def own_pool(
    settings: Settings, sessions: sessionmaker[Session], size: int, overflow: int
) -> sessionmaker[Session]:
    """A small pool of its own on PostgreSQL, without pre-ping, for a part that runs at every
    DATA and replaces a dropped connection itself (the directory's reads, the store's
    commits)."""
    if settings.is_embedded:
        return sessions
    engine = make_engine(
        settings.database_url, pool_pre_ping=False, pool_size=size, max_overflow=overflow
    )
    return make_session_factory(engine)


def build_gateway(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    sender: TaskSender | None,
    dnsfunc: DnsFunc | None = None,
    port: int | None = None,
) -> tuple[GatewayServer, Directory, GroupCommitStore, Enqueuer | None]:
    directory = Directory(own_pool(settings, sessions, 2, 4), settings.logging_domain)
    store = GroupCommitStore(own_pool(settings, sessions, 1, 1))
    enqueuer = (
        Enqueuer(sender, linger=INTAKE_LINGER, batch_size=INTAKE_BATCH)
        if sender is not None
        else None
    )
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
        trusted_proxies=trusted_proxies(settings),
    )
    return server, directory, store, enqueuer


async def serve(settings: Settings, sessions: sessionmaker[Session], sender: TaskSender) -> None:
    # Imported here: submission.py uses this module's tls_context.
    from gateway.smtp.submission import build_submission

    # Built before listening: a ConfigError stops the gateway before it takes any mail.
    ports = ((False, settings.submission_port), (True, settings.submission_tls_port))
    submissions = [
        build_submission(settings, sessions, sender, implicit_tls=implicit)
        for implicit, port in ports
        if port is not None
    ]
    server, directory, store, enqueuer = build_gateway(settings, sessions, sender=sender)
    await server.start()
    for submission in submissions:
        await submission.start()
    # Reply counts reach /metrics through the shared counter table (shared/counters.py).
    counters.start_flusher(sessions)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing transactions in flight")
    draining = [server.drain_and_stop(), *(s.drain_and_stop() for s in submissions)]
    await asyncio.gather(*draining)
    await asyncio.to_thread(counters.stop_flusher)  # counts the last seconds before shutdown
    await asyncio.to_thread(store.close)
    directory.close()
    if enqueuer is not None:
        await asyncio.to_thread(enqueuer.close)

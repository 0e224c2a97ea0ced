"""Assembles and runs the gateway: directory refresh, group-commit store, enqueuer, server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

from sqlalchemy.orm import Session, sessionmaker

from gateway.smtp.directory import Directory
from gateway.smtp.handler import GatewayStats, IntakeHandler
from gateway.smtp.ratelimit import RateLimiter
from gateway.smtp.server import GatewayServer
from gateway.smtp.store import GroupCommitStore
from gateway.smtp.verify import DnsFunc
from shared.config import Settings
from shared.queueing import Enqueuer, TaskSender
from shared.services.ops import add_gateway_counts

log = logging.getLogger("inboxlog.gateway")

REFRESH_SECONDS = 2.0
# How often this gateway adds its reply counts to the shared counter table (for /metrics).
COUNTER_FLUSH_SECONDS = 5.0


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


class CounterFlusher:
    """Adds this gateway's in-memory reply counts to ``gateway_counters`` as deltas.

    The snapshot is taken on the event loop (where the counts change) and the write happens in
    a thread; a failed write leaves the delta pending for the next flush, so nothing is lost or
    counted twice.
    """

    def __init__(self, stats: GatewayStats, sessions: sessionmaker[Session]) -> None:
        self.stats, self.sessions = stats, sessions
        self.flushed: dict[str, int] = {}

    def pending(self) -> dict[str, int]:
        return {
            code: n - self.flushed.get(code, 0)
            for code, n in self.stats.replies.items()
            if n != self.flushed.get(code, 0)
        }

    def _write(self, deltas: dict[str, int]) -> None:
        with self.sessions() as session, session.begin():
            add_gateway_counts(session=session, deltas=deltas)

    async def flush(self) -> None:
        deltas = self.pending()
        if not deltas:
            return
        await asyncio.to_thread(self._write, deltas)
        for code, delta in deltas.items():
            self.flushed[code] = self.flushed.get(code, 0) + delta

    async def flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # database down: the deltas wait for the next flush
            log.warning("gateway counters not flushed: %s", type(exc).__name__)


async def _flush_forever(flusher: CounterFlusher, every: float = COUNTER_FLUSH_SECONDS) -> None:
    while True:
        await asyncio.sleep(every)
        await flusher.flush_logged()


async def serve(settings: Settings, sessions: sessionmaker[Session], sender: TaskSender) -> None:
    server, directory, store, enqueuer = build_gateway(settings, sessions, sender=sender)
    await asyncio.to_thread(directory.refresh)
    await server.start()
    refresher = asyncio.create_task(_refresh_forever(directory))
    flusher = CounterFlusher(server.handler.stats, sessions)
    flushing = asyncio.create_task(_flush_forever(flusher))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing transactions in flight")
    await server.drain_and_stop()
    for task in (refresher, flushing):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await flusher.flush_logged()  # the counts of the last seconds before shutdown
    await asyncio.to_thread(store.close)
    if enqueuer is not None:
        await asyncio.to_thread(enqueuer.close)

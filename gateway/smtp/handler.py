"""The aiosmtpd handler: recipients checked early, sender verified, raw bytes stored, then 250.

Zulip's rule applies: the authoritative checks happen in the worker, but we reject now whatever
we can reject simply. Envelope data goes into columns, never into headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.smtp import replies
from gateway.smtp.directory import Directory, Route
from gateway.smtp.ratelimit import RateLimiter
from gateway.smtp.store import GroupCommitStore
from gateway.smtp.verify import DnsFunc, sender_allowed
from shared.intake import IncomingMessage
from shared.mail.addresses import normalize_address
from shared.queueing import Enqueuer

log = logging.getLogger("inboxlog.gateway")


@dataclass
class GatewayStats:
    """Replies by code, for /metrics and `inboxlog status`."""

    replies: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        code = status[:3]
        self.replies[code] = self.replies.get(code, 0) + 1


class IntakeHandler:
    def __init__(
        self,
        *,
        directory: Directory,
        store: GroupCommitStore,
        enqueuer: Enqueuer | None,
        max_recipients: int,
        client_limiter: RateLimiter,
        account_limiter: RateLimiter,
        dnsfunc: DnsFunc | None = None,
        on_stored: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.directory, self.store, self.enqueuer = directory, store, enqueuer
        self.max_recipients = max_recipients
        self.client_limiter, self.account_limiter = client_limiter, account_limiter
        self.dnsfunc, self.on_stored = dnsfunc, on_stored
        # Sessions between MAIL and the end of DATA: a graceful shutdown waits for them.
        self.transactions: set[int] = set()
        self.stats = GatewayStats()
        self._refresh_lock = asyncio.Lock()

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not self.client_limiter.allow(session.peer[0] if session.peer else None):
            self.stats.count(replies.RATE_LIMITED)
            return replies.RATE_LIMITED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.routes = []  # type: ignore[attr-defined]
        self.transactions.add(id(session))
        return replies.OK_MAIL

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        status = await self._rcpt(envelope, address, rcpt_options)
        if not status.startswith("250"):
            self.stats.count(status)  # RCPT refusals count as rejections too
        return status

    async def _rcpt(self, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        if not self.directory.ready and not await asyncio.to_thread(self.directory.refresh):
            return replies.DIRECTORY_UNAVAILABLE
        key = normalize_address(address)
        route = self.directory.route(key)
        if route is None and key.endswith("@" + self.directory.logging_domain):
            # Maybe created a moment ago: answer from a copy loaded after this RCPT arrived.
            # Concurrent misses share one reload, and the rate limits bound how often it runs.
            await self._refresh_after(time.monotonic())
            route = self.directory.route(key)
        if route is None:
            return replies.NO_SUCH_ADDRESS
        if not self.account_limiter.allow(route.account_id):
            return replies.RATE_LIMITED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if not hasattr(envelope, "routes"):
            envelope.routes = []  # type: ignore[attr-defined]
        if route not in envelope.routes:  # type: ignore[attr-defined]
            envelope.routes.append(route)  # type: ignore[attr-defined]
        return replies.OK_RCPT

    async def _refresh_after(self, asked_at: float) -> None:
        async with self._refresh_lock:
            if self.directory.load_started_at >= asked_at:
                return
            await asyncio.to_thread(self.directory.refresh)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            status = await self._data(session, envelope)
        finally:
            self.transactions.discard(id(session))
        self.stats.count(status)
        return status

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.transactions.discard(id(session))
        return "250 2.0.0 OK"

    async def _allowed(self, raw: bytes, route: Route) -> bool:
        # A team inbox's forward_address takes mail from anyone: customers write to it.
        if route.kind == "team":
            return True
        policy = self.directory.policy(route.account_id)
        if policy is None:
            return False
        if policy.sender_verification == "dkim":
            return await asyncio.to_thread(
                sender_allowed,
                raw,
                policy.sender_verification,
                policy.active_senders,
                policy.trusted_authserv_ids,
                self.dnsfunc,
            )
        return sender_allowed(
            raw, policy.sender_verification, policy.active_senders, policy.trusted_authserv_ids
        )

    async def _data(self, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        routes: list[Route] = getattr(envelope, "routes", [])
        accepted = [r for r in routes if await self._allowed(raw, r)]
        if not accepted:
            return replies.SENDER_NOT_ALLOWED
        peer = session.peer[0] if session.peer else None
        items = [
            IncomingMessage(
                account_id=r.account_id,
                source=r.kind,
                raw=raw,
                inbox_id=r.inbox_id,
                envelope_from=envelope.mail_from,
                envelope_to=tuple(envelope.rcpt_tos),
                client_address=str(peer) if peer else None,
            )
            for r in accepted
        ]
        try:
            ids = await self.store.store(items)
        except Exception:
            return replies.STORAGE_UNAVAILABLE
        stored = [i for i in ids if i is not None]
        log.info("stored %s message(s) ids=%s size=%s", len(stored), stored, len(raw))
        if self.enqueuer is not None:
            self.enqueuer.submit(stored)
        if self.on_stored is not None:
            self.on_stored(stored)
        return replies.OK_QUEUED

"""The aiosmtpd handler: recipients checked early, senders judged, raw bytes stored, then 250.

Zulip's rule applies: the authoritative checks happen in the worker, but we reject now whatever
we can reject simply. Envelope data (and what the gateway found about the sender) goes into
columns, never into headers. As aiosmtpd's hooks promise, the handler owns every reply it sends,
failures included (``handle_exception``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.smtp import replies
from gateway.smtp.directory import Policy, Route
from gateway.smtp.hooks import NamedHooks
from gateway.smtp.ratelimit import RateLimiter
from gateway.smtp.senders import REFUSED, Copy, judge, may_check_signatures
from gateway.smtp.store import StaleFacts
from gateway.smtp.verify import DnsFunc, header_from
from shared.counters import PROCESS, Counters, count_smtp_reply
from shared.intake import IncomingMessage
from shared.mail.addresses import normalize_address
from shared.queueing import Enqueuer
from shared.rules.logging_decision import AccountFacts

if TYPE_CHECKING:
    from gateway.smtp.server import IntakeSMTP

log = logging.getLogger("inboxlog.gateway")


class RouteDirectory(Protocol):
    """Where routes and account facts come from (gateway/smtp/directory.py; a fake in the
    transcript tests)."""

    def at_logging_domain(self, address: str) -> bool: ...
    def cached_route(self, address: str) -> Route | None: ...
    def known_unknown(self, address: str) -> bool: ...
    def lookup_route(self, address: str) -> Route | None: ...
    def cached_policies(self, account_ids: set[int]) -> dict[int, Policy] | None: ...
    def current_facts(self, account_ids: set[int]) -> dict[int, AccountFacts]: ...


class MessageStore(Protocol):
    """Durable storage: answers once the messages are on disk (gateway/smtp/store.py)."""

    async def store(
        self, items: Sequence[IncomingMessage], assumed: dict[int, int] | None = None
    ) -> list[int | None]: ...


class FreshFacts:
    """The account facts DATA answers from, current as of the moment each request arrived —
    with one read for every DATA that arrived while the previous read was under way (like the
    group commit of the store): a read that started before a request arrived never answers it,
    so a change the API answered before the client's DATA is always seen."""

    def __init__(self, directory: RouteDirectory) -> None:
        self.directory = directory
        self._waiting: list[tuple[set[int], asyncio.Future[dict[int, AccountFacts]]]] = []
        self._reading = False

    async def get(self, account_ids: set[int]) -> dict[int, AccountFacts]:
        fut: asyncio.Future[dict[int, AccountFacts]] = asyncio.get_running_loop().create_future()
        self._waiting.append((account_ids, fut))
        if not self._reading:
            self._reading = True
            asyncio.get_running_loop().create_task(self._read())
        return await fut

    async def _read(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                wanted: set[int] = set().union(*(ids for ids, _ in batch))
                try:
                    facts = await asyncio.to_thread(self.directory.current_facts, wanted)
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for ids, fut in batch:
                    if not fut.done():
                        fut.set_result({a: facts[a] for a in ids if a in facts})
        finally:
            self._reading = False


@dataclass
class GatewayStats:
    """Replies by code: kept here, and counted for /metrics and `inboxlog status` through the
    process's counters (shared/counters.py), which a flusher adds to the shared table."""

    replies: dict[str, int] = field(default_factory=dict)
    counters: Counters = field(default_factory=lambda: PROCESS)

    def count(self, status: str) -> None:
        code = status[:3]
        self.replies[code] = self.replies.get(code, 0) + 1
        count_smtp_reply(code, counters=self.counters)


def client_of(session: Session) -> str | None:
    """The client's address: from the PROXY header behind a load balancer, else the peer."""
    proxy = session.proxy_data
    if proxy is not None and proxy.src_addr is not None:
        return str(proxy.src_addr)
    return str(session.peer[0]) if session.peer else None


# The transaction's intake routes ride on aiosmtpd's Envelope, which has no field for them:
# these two are the only places that touch that extra attribute.
def routes_of(envelope: Envelope) -> list[Route]:
    routes: list[Route] = getattr(envelope, "routes", None) or []
    return routes


def set_routes(envelope: Envelope, routes: list[Route]) -> None:
    setattr(envelope, "routes", routes)  # noqa: B010  (not a field of Envelope)


class IntakeHandler(NamedHooks):
    hook_prefixes = ("handle_", "auth_")  # what aiosmtpd looks up (gateway/smtp/hooks.py)

    def __init__(
        self,
        *,
        directory: RouteDirectory,
        store: MessageStore,
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
        self.fresh = FreshFacts(directory)
        # Sessions between MAIL and the end of DATA: a graceful shutdown waits for them.
        self.transactions: set[int] = set()
        self.stats = GatewayStats()

    async def handle_PROXY(
        self, server: IntakeSMTP, session: Session, envelope: Envelope, proxy_data: ProxyData
    ) -> bool:
        """A load balancer's PROXY header names the client; False closes the connection.

        Only IntakeSMTP reads PROXY headers (with trusted proxies configured)."""
        return server.admit_client(client_of(session))

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not self.client_limiter.allow(client_of(session)):
            self.stats.count(replies.RATE_LIMITED)
            return replies.RATE_LIMITED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        set_routes(envelope, [])
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

    async def _route(self, address: str) -> Route | None:
        directory = self.directory
        route = directory.cached_route(address)
        if route is not None or not directory.at_logging_domain(address):
            return route
        if directory.known_unknown(address):
            return None
        # Not known here yet (created a moment ago, or made up): the database decides.
        return await asyncio.to_thread(directory.lookup_route, address)

    async def _rcpt(self, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        try:
            route = await self._route(normalize_address(address))
        except Exception as exc:
            log.warning("recipient lookup failed: %s", type(exc).__name__)
            return replies.DIRECTORY_UNAVAILABLE
        if route is None:
            return replies.NO_SUCH_ADDRESS
        if not self.account_limiter.allow(route.account_id):
            return replies.RATE_LIMITED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        routes = routes_of(envelope)
        if route not in routes:
            routes.append(route)
        set_routes(envelope, routes)
        return replies.OK_RCPT

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

    async def handle_exception(self, error: Exception) -> str:
        """Any failure inside a hook: never the exception's words, and transient (451), so the
        client keeps the mail and retries."""
        log.error("SMTP session failed: %s", type(error).__name__)
        self.stats.count(replies.INTERNAL_ERROR)
        return replies.INTERNAL_ERROR

    async def _judge(
        self, raw: bytes, routes: list[Route], facts: dict[int, AccountFacts]
    ) -> list[Copy]:
        sender = header_from(raw)
        if may_check_signatures(sender, routes, facts):
            return await asyncio.to_thread(judge, raw, routes, facts, self.dnsfunc, sender)
        return judge(raw, routes, facts, self.dnsfunc, sender)

    async def _verdicts(
        self, raw: bytes, routes: list[Route], *, fresh: bool
    ) -> tuple[list[Copy], dict[int, int] | None]:
        """Each copy's verdict, and the account versions it assumed.

        From the cached facts when every account is cached: the store then commits only if
        those versions are still current, read in its own transaction, after the DATA arrived
        (so nothing waits for a read of its own). A refusal, which stores nothing, is always
        confirmed on facts read after the DATA arrived, as is everything once ``fresh``."""
        accounts = {r.account_id for r in routes}
        cached = None if fresh else self.directory.cached_policies(accounts)
        if cached is not None:
            facts = {a: p.facts for a, p in cached.items()}
            copies = await self._judge(raw, routes, facts)
            if any(c.verdict != REFUSED for c in copies):
                return copies, {a: p.version for a, p in cached.items()}
        return await self._judge(raw, routes, await self.fresh.get(accounts)), None

    async def _data(self, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        routes = routes_of(envelope)
        for fresh in (False, True):
            try:
                copies, assumed = await self._verdicts(raw, routes, fresh=fresh)
            except Exception as exc:
                log.warning("sender check failed: %s", type(exc).__name__)
                return replies.DIRECTORY_UNAVAILABLE
            if not any(c.verdict != REFUSED for c in copies):
                return replies.SENDER_NOT_ALLOWED
            try:
                ids = await self.store.store(self._items(session, envelope, raw, copies), assumed)
                break
            except StaleFacts:
                continue  # an account changed since its facts were cached: judge again
            except Exception:
                return replies.STORAGE_UNAVAILABLE
        else:
            raise AssertionError("unreachable: a fresh verdict assumes nothing")
        stored = [i for i in ids if i is not None]
        log.info("stored %s message(s) ids=%s size=%s", len(stored), stored, len(raw))
        if self.enqueuer is not None:
            self.enqueuer.submit(stored, len(raw))
        if self.on_stored is not None:
            self.on_stored(stored)
        return replies.OK_QUEUED

    @staticmethod
    def _items(
        session: Session, envelope: Envelope, raw: bytes, copies: list[Copy]
    ) -> list[IncomingMessage]:
        client = client_of(session)
        return [
            IncomingMessage(
                account_id=c.route.account_id,
                source=c.route.kind,
                raw=raw,
                inbox_id=c.route.inbox_id,
                envelope_from=envelope.mail_from,
                envelope_to=tuple(envelope.rcpt_tos),
                client_address=client,
                sender_verdict=c.verdict,
            )
            for c in copies
        ]

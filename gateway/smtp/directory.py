"""What RCPT and DATA are answered from: intake routes and each account's facts, cached and kept
honest by the database (§6).

- Routes: an intake address never changes once created (there is no route that deletes an
  account or inbox, and tokens are never reused), so a found route is cached for good. An address
  the cache does not know costs one indexed lookup; an address at the logging domain that does not
  exist is remembered (bounded, expiring) so a dictionary attack costs one lookup per address. An
  address is unguessable (≥ 128 random bits) and unknown to anyone until the API has answered with
  it, so a remembered miss can never hide an address someone was given.
- Account facts (users, proven addresses, settings): every answer that depends on them rests on
  a read of the accounts' ``config_version`` made after the DATA arrived — one primary-key read,
  which every change made through the API bumps in its own transaction. A 250 is judged on the
  cached facts and the store commits only if their versions are still current, read in its own
  transaction (gateway/smtp/store.py); a refusal, or a stale version, reads them here first and
  reloads an account only when its version moved. So a new user, a deactivation or a settings
  change is in force the moment the API has answered, and the load on the database grows with
  the rate of changes, never with the number of accounts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import single_read
from shared.db.models import Account, TeamInbox
from shared.rules.logging_decision import AccountFacts
from shared.services.account_facts import load_account_facts

T = TypeVar("T")
# Remembered unknown addresses: enough for a large dictionary attack, bounded in memory.
NEGATIVE_LIMIT = 100_000
NEGATIVE_SECONDS = 600.0


@dataclass(frozen=True)
class Route:
    kind: str  # bcc | forward | team
    account_id: int
    inbox_id: int | None


@dataclass(frozen=True)
class Policy:
    """An account's facts as of ``version``."""

    version: int
    facts: AccountFacts


_A, _T = Account.__table__.c, TeamInbox.__table__.c
_NO_INBOX = sa.cast(sa.null(), sa.Integer)
# One round trip, three unique-index probes.
_ROUTE_BY_TOKEN = sa.union_all(
    sa.select(sa.literal("bcc"), _A.id, _NO_INBOX).where(_A.bcc_token == sa.bindparam("t")),
    sa.select(sa.literal("forward"), _A.id, _NO_INBOX).where(_A.forward_token == sa.bindparam("t")),
    sa.select(sa.literal("team"), _T.account_id, _T.id).where(
        _T.forward_token == sa.bindparam("t")
    ),
)
_VERSIONS = sa.select(_A.id, _A.config_version).where(
    _A.id.in_(sa.bindparam("ids", expanding=True))
)

PG_VERSIONS = f"SELECT id, config_version FROM {Account.__tablename__} WHERE id = ANY(%s)"


def read_versions(conn: sa.Connection, ids: list[int]) -> dict[int, int]:
    """The accounts' config versions, in ``conn``'s transaction (or autocommit)."""
    if conn.dialect.name == "postgresql":
        # As the driver's SQL: nothing to compile, one array parameter.
        return {a: v for a, v in conn.exec_driver_sql(PG_VERSIONS, (ids,))}
    return {a: v for a, v in conn.execute(_VERSIONS, {"ids": ids})}


class Directory:
    def __init__(self, sessions: sessionmaker[Session], logging_domain: str) -> None:
        self.sessions, self.logging_domain = sessions, logging_domain.lower()
        self._routes: dict[str, Route] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._policies: dict[int, Policy] = {}
        self._lock = threading.Lock()  # the caches are read on the loop and filled in threads
        # The connection the version reads go through on PostgreSQL (see _read_versions).
        self._held: sa.Connection | None = None
        self._held_lock = threading.Lock()

    # -- RCPT ----------------------------------------------------------------------------------
    def at_logging_domain(self, address: str) -> bool:
        return address.endswith("@" + self.logging_domain)

    def cached_route(self, address: str) -> Route | None:
        """The route if known, without touching the database (safe on the event loop)."""
        return self._routes.get(address)

    def known_unknown(self, address: str, now: float | None = None) -> bool:
        """Whether ``address`` was looked up recently and did not exist."""
        with self._lock:
            seen = self._unknown.get(address)
            if seen is None:
                return False
            if (time.monotonic() if now is None else now) - seen > NEGATIVE_SECONDS:
                del self._unknown[address]
                return False
            return True

    def lookup_route(self, address: str) -> Route | None:
        """The route of an intake address from the database (blocking; one indexed lookup)."""
        local = address.rpartition("@")[0]
        row = self._read(lambda conn: conn.execute(_ROUTE_BY_TOKEN, {"t": local}).first())
        with self._lock:
            if row is None:
                self._unknown[address] = time.monotonic()
                self._unknown.move_to_end(address)
                while len(self._unknown) > NEGATIVE_LIMIT:
                    self._unknown.popitem(last=False)
                return None
            route = Route(row[0], row[1], row[2])
            self._routes[address] = route
            return route

    def _read(self, query: Callable[[sa.Connection], T]) -> T:
        """One read in autocommit. The gateway's directory engine skips the pool's pre-ping
        (a round trip per read, at every DATA): a connection the server dropped fails the read
        once and is replaced, and the read is tried again on a fresh one."""
        for attempt in (1, 2):
            try:
                with single_read(self.sessions) as conn:
                    return query(conn)
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    # -- DATA ----------------------------------------------------------------------------------
    def _read_versions(self, ids: list[int]) -> dict[int, int]:
        """The accounts' config versions. On PostgreSQL through one connection held in
        autocommit — the read runs at every DATA, and a pool checkout with its switch to
        autocommit and back cost more than the read itself; a dropped connection is replaced
        and the read tried again, as in ``_read``."""
        engine = self.sessions.kw.get("bind")
        if not (isinstance(engine, sa.Engine) and engine.dialect.name == "postgresql"):
            return self._read(lambda conn: read_versions(conn, ids))
        with self._held_lock:
            for attempt in (1, 2):
                if self._held is None:
                    self._held = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                try:
                    return read_versions(self._held, ids)
                except DBAPIError as exc:
                    self._held.close()
                    self._held = None
                    if attempt == 2 or not exc.connection_invalidated:
                        raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._held_lock:
            if self._held is not None:
                self._held.close()
                self._held = None

    def _version(self, account_id: int) -> int | None:
        policy = self._policies.get(account_id)
        return None if policy is None else policy.version

    def cached_policies(self, account_ids: set[int]) -> dict[int, Policy] | None:
        """The cached facts of every one of these accounts with their versions, or None when
        one is not cached (safe on the event loop: no database)."""
        with self._lock:
            policies = {a: self._policies.get(a) for a in account_ids}
        if any(p is None for p in policies.values()):
            return None
        return {a: p for a, p in policies.items() if p is not None}

    def current_facts(self, account_ids: set[int]) -> dict[int, AccountFacts]:
        """Each account's facts, current as of now (blocking): one version read, and a reload
        of an account only when a change bumped its version since it was cached."""
        if not account_ids:
            return {}
        versions = self._read_versions(sorted(account_ids))
        stale = [a for a, v in versions.items() if self._version(a) != v]
        if stale:
            with self.sessions() as session:
                for account in session.scalars(sa.select(Account).where(Account.id.in_(stale))):
                    policy = Policy(
                        account.config_version,
                        load_account_facts(session, account, self.logging_domain),
                    )
                    with self._lock:
                        old = self._policies.get(account.id)
                        # A slower reload never replaces a newer one.
                        if old is None or old.version <= policy.version:
                            self._policies[account.id] = policy
        return {a: self._policies[a].facts for a in versions if a in self._policies}

"""The in-memory copy of intake addresses and sender facts that RCPT and DATA are answered from.

Refreshed from the database in the background; a recipient that is not found triggers an early
refresh, so a newly created account or inbox works within a moment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Account, Connection, User
from shared.services.accounts import intake_routes, settings_of

log = logging.getLogger("inboxlog.gateway")


@dataclass(frozen=True)
class Route:
    kind: str  # bcc | forward | team
    account_id: int
    inbox_id: int | None


@dataclass(frozen=True)
class AccountPolicy:
    sender_verification: str
    trusted_authserv_ids: frozenset[str]
    # Active users' primary and personal connected addresses.
    active_senders: frozenset[str]


@dataclass
class Snapshot:
    routes: dict[str, Route] = field(default_factory=dict)
    policies: dict[int, AccountPolicy] = field(default_factory=dict)


def load_snapshot(sessions: sessionmaker[Session], logging_domain: str) -> Snapshot:
    with sessions() as session:
        routes = {
            addr: Route(kind, acc, inbox or None)
            for addr, (kind, acc, inbox) in intake_routes(
                session=session, logging_domain=logging_domain
            ).items()
        }
        senders: dict[int, set[str]] = {}
        for acc, email in session.execute(
            sa.select(User.account_id, User.email).where(User.active.is_(True))
        ):
            senders.setdefault(acc, set()).add(email)
        for acc, address in session.execute(
            sa.select(Connection.account_id, Connection.address)
            .join(User, User.id == Connection.user_id)
            .where(Connection.kind == "personal", User.active.is_(True))
        ):
            senders.setdefault(acc, set()).add(address)
        policies = {}
        for account in session.scalars(sa.select(Account)):
            s = settings_of(account)
            policies[account.id] = AccountPolicy(
                s.sender_verification,
                frozenset(s.trusted_authserv_ids),
                frozenset(senders.get(account.id, ())),
            )
    return Snapshot(routes, policies)


class Directory:
    def __init__(self, sessions: sessionmaker[Session], logging_domain: str) -> None:
        self.sessions, self.logging_domain = sessions, logging_domain
        self.snapshot: Snapshot | None = None
        self.load_started_at = 0.0

    def refresh(self) -> bool:
        """Reload from the database (blocking); False when the database is unavailable."""
        started = time.monotonic()
        try:
            self.snapshot = load_snapshot(self.sessions, self.logging_domain)
            self.load_started_at = max(self.load_started_at, started)
            return True
        except Exception as exc:
            log.warning("directory refresh failed: %s", type(exc).__name__)
            return False

    @property
    def ready(self) -> bool:
        return self.snapshot is not None

    def route(self, address: str) -> Route | None:
        return self.snapshot.routes.get(address) if self.snapshot else None

    def policy(self, account_id: int) -> AccountPolicy | None:
        return self.snapshot.policies.get(account_id) if self.snapshot else None

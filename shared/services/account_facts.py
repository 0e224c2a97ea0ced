"""Who is who in an account: its users and their proven addresses, and what counts as internal.

One reading for every process that needs it — the worker's logging decision (§4) and the
gateway's sender checks (§6) — so they never disagree about an address. Only proven personal
connections count (C7): an unverified one is nobody's address yet.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.account_settings import matches_address_or_domain
from shared.db.models import Account, Connection, TeamInbox, User
from shared.rules.logging_decision import AccountFacts, UserFacts
from shared.services.accounts import intake_address, settings_of


def counts_as_owned(conn: Connection) -> bool:
    """A connection counts as its holder's address: team ones always, personal ones once proven."""
    return conn.kind == "team" or conn.verified_at is not None


def load_account_facts(session: Session, account: Account, logging_domain: str) -> AccountFacts:
    """The account's users, their addresses and the internal addresses, as of this session."""
    personal: dict[int, set[str]] = {}
    internal: set[str] = {
        intake_address(account.bcc_token, logging_domain),
        intake_address(account.forward_token, logging_domain),
    }
    for address, kind, user_id in session.execute(
        sa.select(Connection.address, Connection.kind, Connection.user_id).where(
            Connection.account_id == account.id,
            sa.or_(Connection.kind == "team", Connection.verified_at.is_not(None)),
        )
    ):
        internal.add(address)
        if kind == "personal" and user_id is not None:
            personal.setdefault(user_id, set()).add(address)
    for token in session.scalars(
        sa.select(TeamInbox.forward_token).where(TeamInbox.account_id == account.id)
    ):
        internal.add(intake_address(token, logging_domain))
    users = []
    for u in session.scalars(
        sa.select(User).where(User.account_id == account.id).order_by(User.id)
    ):
        addresses = frozenset({u.email} | personal.get(u.id, set()))
        internal |= addresses
        users.append(UserFacts(u.id, addresses, u.active, u.default_log, tuple(u.never_log or ())))
    return AccountFacts(settings_of(account), tuple(users), frozenset(internal))


def internal_among(
    session: Session, account: Account, addresses: Collection[str], logging_domain: str
) -> set[str]:
    """Which of ``addresses`` :meth:`AccountFacts.is_internal` would call internal, read for
    those addresses only: a send asks about its few recipients, whatever the account's size."""
    wanted = set(addresses)
    if not wanted:
        return set()
    domains = set(settings_of(account).internal_domains)
    found = {a for a in wanted if matches_address_or_domain(a, domains)}
    at_intake = {a for a in wanted if a.endswith("@" + logging_domain)}
    if at_intake:
        tokens = {account.bcc_token, account.forward_token} | set(
            session.scalars(
                sa.select(TeamInbox.forward_token).where(TeamInbox.account_id == account.id)
            )
        )
        found |= at_intake & {intake_address(t, logging_domain) for t in tokens}
    listed = sorted(wanted)
    found |= set(
        session.scalars(
            sa.select(User.email).where(User.account_id == account.id, User.email.in_(listed))
        )
    )
    found |= set(
        session.scalars(
            sa.select(Connection.address).where(
                Connection.account_id == account.id,
                Connection.address.in_(listed),
                sa.or_(Connection.kind == "team", Connection.verified_at.is_not(None)),
            )
        )
    )
    return found

"""Leases on connections: several pollers share the work, none syncs a connection twice at once,
and a dead poller's connections are taken over once its leases expire."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.engine import rowcount, single_read
from shared.db.models import Connection


@dataclass(frozen=True)
class Seen:
    """A connection one scan may hold: free, expired or already ours."""

    id: int
    control_version: int  # moves when a watched setting changes (Connection.control_version)
    ours: bool


def claimable(sessions: sessionmaker[Session], owner: str) -> list[Seen]:
    """Connections with IMAP settings, not stopped for a person (auth_failed,
    reauth_required), free, expired or ours — with their control versions, so this one
    query per scan also tells which of our connections changed."""
    now = utcnow()
    with single_read(sessions) as conn:
        rows = conn.execute(
            sa.select(Connection.id, Connection.control_version, Connection.lease_owner)
            .where(
                Connection.imap_host.is_not(None),
                Connection.status.not_in(("auth_failed", "reauth_required")),
                sa.or_(
                    Connection.lease_owner.is_(None),
                    Connection.lease_expires_at < now,
                    Connection.lease_owner == owner,
                ),
            )
            .order_by(Connection.id)
        ).all()
    return [Seen(cid, version, lease_owner == owner) for cid, version, lease_owner in rows]


def claim(sessions: sessionmaker[Session], connection_id: int, owner: str, ttl: float) -> bool:
    now = utcnow()
    with sessions() as session, session.begin():
        result = session.execute(
            sa.update(Connection)
            .where(
                Connection.id == connection_id,
                sa.or_(
                    Connection.lease_owner.is_(None),
                    Connection.lease_expires_at < now,
                    Connection.lease_owner == owner,
                ),
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl))
        )
        return rowcount(result) == 1


def renew(
    sessions: sessionmaker[Session],
    ids: list[int],
    owner: str,
    ttl: float,
    *,
    in_sync: Collection[int] = (),
) -> set[int]:
    """Extend our leases, and move ``last_sync_at`` of the connections ``in_sync`` (idle
    and up to date) to now — one transaction for all of them, so an idle mailbox writes no
    row of its own. Returns the ids we still hold."""
    if not ids:
        return set()
    now = utcnow()
    with sessions() as session, session.begin():
        session.execute(
            sa.update(Connection)
            .where(Connection.id.in_(ids), Connection.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=ttl))
        )
        if in_sync:
            session.execute(
                sa.update(Connection)
                .where(Connection.id.in_(list(in_sync)), Connection.lease_owner == owner)
                .values(last_sync_at=now)
            )
        return set(
            session.scalars(
                sa.select(Connection.id).where(
                    Connection.id.in_(ids), Connection.lease_owner == owner
                )
            )
        )


def release(sessions: sessionmaker[Session], connection_id: int, owner: str) -> None:
    with sessions() as session, session.begin():
        session.execute(
            sa.update(Connection)
            .where(Connection.id == connection_id, Connection.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


def still_held(session: Session, connection_id: int, owner: str) -> bool:
    return (
        session.scalar(sa.select(Connection.lease_owner).where(Connection.id == connection_id))
        == owner
    )

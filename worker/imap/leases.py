"""Leases on connections: several pollers share the work, none syncs a connection twice at once,
and a dead poller's connections are taken over once its leases expire."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import utcnow
from shared.db.engine import rowcount
from shared.db.models import Connection


def claimable(sessions: sessionmaker[Session], owner: str) -> list[int]:
    """Connections with IMAP settings, not stopped for a person (auth_failed,
    reauth_required), free or expired."""
    now = utcnow()
    with sessions() as session:
        return list(
            session.scalars(
                sa.select(Connection.id)
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
            )
        )


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


def renew(sessions: sessionmaker[Session], ids: list[int], owner: str, ttl: float) -> set[int]:
    """Extend our leases; returns the ids we still hold."""
    if not ids:
        return set()
    with sessions() as session, session.begin():
        session.execute(
            sa.update(Connection)
            .where(Connection.id.in_(ids), Connection.lease_owner == owner)
            .values(lease_expires_at=utcnow() + timedelta(seconds=ttl))
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

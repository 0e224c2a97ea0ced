"""The facts routing rules are evaluated on, read for one message: shared by the team pipeline
and the rules dry-run endpoint, so a dry run answers exactly what the pipeline would do."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Contact, User
from shared.mail import ParsedMessage
from shared.rules.routing import RoutingFacts


def routing_facts(
    *, session: Session, account_id: int, pm: ParsedMessage, connection_address: str | None = None
) -> RoutingFacts:
    """``to_address`` matches the team address that received it: the connection's address when
    it came over IMAP, and the message's To/Cc/Delivered-To."""
    sender = pm.from_.address if pm.from_ else None
    contact = (
        session.scalar(
            sa.select(Contact).where(Contact.account_id == account_id, Contact.email == sender)
        )
        if sender
        else None
    )
    active = frozenset(
        session.scalars(
            sa.select(User.id).where(User.account_id == account_id, User.active.is_(True))
        )
    )
    received = {a.address for a in (*pm.to, *pm.cc, *pm.delivered_to)}
    if connection_address:
        received.add(connection_address)
    return RoutingFacts(
        from_address=sender,
        to_addresses=frozenset(received),
        subject=pm.subject,
        body=pm.text,
        headers=pm.header,
        is_contact=contact is not None,
        contact_owner_id=contact.owner_id if contact else None,
        active_user_ids=active,
    )

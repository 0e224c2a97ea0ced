"""Builds accounts, users and contacts directly through the domain services, for pipeline tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import transaction
from shared.db.models import Contact, Decision, LoggedEmail, StoredMessage, User
from shared.principal import Principal
from shared.services import accounts, connections, crm, inboxes, users
from shared.services.accounts import intake_address

_seq = itertools.count(1)


@dataclass
class World:
    sessions: sessionmaker[Session]
    account_id: int
    admin_id: int
    bcc: str
    forward: str
    domain: str = "log.localhost"

    @property
    def admin(self) -> Principal:
        return Principal(
            kind="user", account_id=self.account_id, user_id=self.admin_id, role="admin"
        )

    def user(
        self,
        email: str,
        *,
        log: bool = True,
        never_log: list[str] | None = None,
        active: bool = True,
    ) -> int:
        with transaction(self.sessions) as s:
            user, _ = users.create_user(
                session=s, principal=self.admin, email=email, name=None, role="member"
            )
            user.default_log, user.never_log, user.active = log, never_log or [], active
            return user.id

    def settings(self, **patch: Any) -> None:
        with transaction(self.sessions) as s:
            accounts.update_settings(
                session=s,
                account=accounts.get_account(session=s, account_id=self.account_id),
                patch=patch,
            )

    def contact(self, email: str, owner_id: int | None = None) -> int:
        with transaction(self.sessions) as s:
            return crm.create_contact(
                session=s, principal=self.admin, email=email, name=None, owner_id=owner_id
            ).id

    def inbox(self, name: str, member_ids: list[int]) -> tuple[int, str]:
        with transaction(self.sessions) as s:
            inbox = inboxes.create_inbox(
                session=s, principal=self.admin, name=name, sender_name=None, member_ids_=member_ids
            )
            return inbox.id, intake_address(inbox.forward_token, self.domain)

    def connect(self, address: str, **kw: Any) -> int:
        from cryptography.fernet import Fernet

        from shared.crypto import SecretBox

        box = kw.pop("box", SecretBox(Fernet.generate_key().decode()))
        principal = kw.pop("principal", self.admin)
        # Proven (C7) as a successful login would: most tests need the address to count.
        verified = kw.pop("verified", True)
        with transaction(self.sessions) as s:
            conn = connections.create_connection(
                session=s, principal=principal, box=box, address=address, **kw
            )
            if verified and conn.kind == "personal" and conn.verified_at is None:
                connections.verify_connection(
                    session=s, principal=self.admin, connection_id=conn.id
                )
            return conn.id

    def smtp_sender(self, address: str, *, port: int, box: Any) -> Principal:
        """A member whose own address is connected with plain SMTP on loopback ``port``
        (secrets sealed with ``box``): the principal to send as."""
        uid = self.user(address)
        with self.sessions() as s:
            user = s.get(User, uid)
            assert user is not None
            role = user.role
        me = Principal(kind="user", account_id=self.account_id, user_id=uid, role=role)
        self.connect(
            address, kind="personal", principal=me, box=box,
            smtp={"host": "localhost", "port": port, "security": "none"},
        )  # fmt: skip
        return me

    # -- reading results ---------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    sa.select(Decision)
                    .where(Decision.account_id == self.account_id)
                    .order_by(Decision.id)
                )
            )

    def emails(self) -> list[LoggedEmail]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    sa.select(LoggedEmail)
                    .where(LoggedEmail.account_id == self.account_id)
                    .order_by(LoggedEmail.id)
                )
            )

    def contacts(self) -> dict[str, Contact]:
        with self.sessions() as s:
            return {
                c.email: c
                for c in s.scalars(sa.select(Contact).where(Contact.account_id == self.account_id))
            }

    def stored(self) -> list[StoredMessage]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    sa.select(StoredMessage)
                    .where(StoredMessage.account_id == self.account_id)
                    .order_by(StoredMessage.id)
                )
            )

    def user_id(self, email: str) -> int:
        with self.sessions() as s:
            return s.scalars(
                sa.select(User.id).where(User.account_id == self.account_id, User.email == email)
            ).one()


def new_world(
    sessions: sessionmaker[Session],
    admin_email: str = "alice@ours.example",
    domain: str = "log.localhost",
) -> World:
    with transaction(sessions) as s:
        account, admin, _ = accounts.create_account(
            session=s, name=f"Acct{next(_seq)}", admin_email=admin_email
        )
        return World(
            sessions,
            account.id,
            admin.id,
            intake_address(account.bcc_token, domain),
            intake_address(account.forward_token, domain),
            domain,
        )

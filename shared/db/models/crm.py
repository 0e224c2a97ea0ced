"""Contacts and companies: one per address, one per registrable domain, per account."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow


class Company(Base):
    __tablename__ = "companies"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "domain"),
        # GET /v1/companies, newest first, by keyset.
        sa.Index("ix_companies_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    domain: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contact(Base):
    __tablename__ = "contacts"
    # Addresses are stored normalized (lowercase), so this constraint is case-insensitive.
    __table_args__ = (
        sa.UniqueConstraint("account_id", "email"),
        # GET /v1/contacts, newest first, by keyset.
        sa.Index("ix_contacts_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(sa.String(320))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # §9: no pixel and no rewritten link in this contact's copies from now on.
    tracking_opt_out: Mapped[bool] = mapped_column(default=False)

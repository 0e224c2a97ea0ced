"""Contacts and companies: lookups, manual creation, and get-or-create by constraint."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.models import Company, Contact, User
from shared.errors import Conflict, Invalid, NotFound
from shared.mail.addresses import is_free_mail_domain, normalize_address, registrable_domain
from shared.principal import Principal


def company_domain_for(address: str) -> str | None:
    """The registrable domain that makes a company, or None (free-mail, unknown suffix)."""
    domain = address.rpartition("@")[2]
    if not domain or is_free_mail_domain(domain):
        return None
    reg = registrable_domain(domain)
    if reg is None or is_free_mail_domain(reg):
        return None
    return reg


def get_or_create_company(*, session: Session, account_id: int, domain: str) -> Company:
    """Race-safe: the unique (account, domain) constraint decides, not a look-first."""
    found = session.scalar(
        sa.select(Company).where(Company.account_id == account_id, Company.domain == domain)
    )
    if found:
        return found
    try:
        with session.begin_nested():
            company = Company(account_id=account_id, domain=domain, name=domain)
            session.add(company)
            session.flush()
            return company
    except IntegrityError:
        return session.scalars(
            sa.select(Company).where(Company.account_id == account_id, Company.domain == domain)
        ).one()


def get_contact(*, session: Session, principal: Principal, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None or contact.account_id != principal.account_id:
        raise NotFound("contact not found")
    return contact


def find_contacts(
    *,
    session: Session,
    principal: Principal,
    email: str | None,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[Contact]:
    """Contacts newest first; ``before_id``: those older than that contact (keyset, on
    ``ix_contacts_account_id_id``; by address, the unique (account, email) index)."""
    q = sa.select(Contact).where(Contact.account_id == principal.account_id)
    if email:
        q = q.where(Contact.email == normalize_address(email))
    if before_id is not None:
        q = q.where(Contact.id < before_id)
    return list(session.scalars(q.order_by(Contact.id.desc()).limit(limit).offset(offset)))


def check_owner(*, session: Session, principal: Principal, owner_id: int) -> None:
    owner = session.get(User, owner_id)
    if owner is None or owner.account_id != principal.account_id:
        raise Invalid("unknown owner", code="unknown_user", details={"owner_id": owner_id})


def create_contact(
    *,
    session: Session,
    principal: Principal,
    email: str,
    name: str | None,
    owner_id: int | None,
    associate_companies: bool = True,
) -> Contact:
    principal.require_user()
    address = normalize_address(email)
    if owner_id is not None:
        check_owner(session=session, principal=principal, owner_id=owner_id)
    company_id = None
    domain = company_domain_for(address) if associate_companies else None
    if domain:
        company_id = get_or_create_company(
            session=session,
            account_id=principal.user_account_id(),
            domain=domain,
        ).id
    contact = Contact(
        account_id=principal.account_id,
        email=address,
        name=name,
        owner_id=owner_id,
        company_id=company_id,
    )
    try:
        with session.begin_nested():
            session.add(contact)
            session.flush()
    except IntegrityError as exc:
        existing = session.scalar(
            sa.select(Contact.id).where(
                Contact.account_id == principal.account_id, Contact.email == address
            )
        )
        raise Conflict(
            f"a contact with address {address} already exists",
            code="contact_exists",
            details={"contact_id": existing},
        ) from exc
    return contact


def get_company(*, session: Session, principal: Principal, company_id: int) -> Company:
    company = session.get(Company, company_id)
    if company is None or company.account_id != principal.account_id:
        raise NotFound("company not found")
    return company


def find_companies(
    *,
    session: Session,
    principal: Principal,
    domain: str | None,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[Company]:
    """Companies newest first; ``before_id``: those older than that company (keyset, on
    ``ix_companies_account_id_id``)."""
    q = sa.select(Company).where(Company.account_id == principal.account_id)
    if domain:
        q = q.where(Company.domain == domain.strip().lower())
    if before_id is not None:
        q = q.where(Company.id < before_id)
    return list(session.scalars(q.order_by(Company.id.desc()).limit(limit).offset(offset)))

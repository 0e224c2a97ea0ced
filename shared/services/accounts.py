"""Accounts: creation with their first admin, intake addresses and settings."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.account_settings import AccountSettings
from shared.crypto import hash_token, new_api_token, new_intake_token
from shared.db.models import Account, ApiToken, User
from shared.errors import Invalid, NotFound
from shared.mail.addresses import normalize_address


def intake_address(token: str, logging_domain: str) -> str:
    return f"{token}@{logging_domain}"


def issue_token(*, session: Session, user: User) -> str:
    """Create a bearer token for ``user``; only its hash is stored."""
    token = new_api_token()
    session.add(ApiToken(account_id=user.account_id, user_id=user.id, token_hash=hash_token(token)))
    return token


def create_account(
    *, session: Session, name: str, admin_email: str, admin_name: str | None = None
) -> tuple[Account, User, str]:
    name = name.strip()
    if not name:
        raise Invalid("name must not be empty", details={"field": "name"})
    account = Account(
        name=name,
        bcc_token="log-" + new_intake_token(),
        forward_token="fwd-" + new_intake_token(),
        settings=AccountSettings().model_dump(),
    )
    session.add(account)
    session.flush()
    admin = User(
        account_id=account.id,
        email=normalize_address(admin_email),
        name=admin_name,
        role="admin",
        never_log=[],
    )
    session.add(admin)
    session.flush()
    return account, admin, issue_token(session=session, user=admin)


def bump_config_version(*, session: Session, account_id: int | None) -> None:
    """Invalidate the workers' cached facts of this account (users, addresses, settings)."""
    session.execute(
        sa.update(Account)
        .where(Account.id == account_id)
        .values(config_version=Account.config_version + 1)
    )


def get_account(*, session: Session, account_id: int) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound("account not found")
    return account


def settings_of(account: Account) -> AccountSettings:
    return AccountSettings.model_validate(account.settings or {})


def update_settings(*, session: Session, account: Account, patch: dict[str, Any]) -> Account:
    merged = {**settings_of(account).model_dump(), **patch}
    account.settings = AccountSettings.model_validate(merged).model_dump()
    session.flush()
    bump_config_version(session=session, account_id=account.id)
    return account

"""Users of an account, their roles, activity and log/track defaults."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.account_settings import normalize_never_log_entry
from shared.db.models import Connection, User
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.mail.addresses import normalize_address
from shared.principal import Principal
from shared.services.accounts import bump_config_version, issue_token

ROLES = ("admin", "member")


def get_user(*, session: Session, principal: Principal, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.account_id != principal.account_id:
        raise NotFound("user not found")
    return user


def list_users(
    *, session: Session, principal: Principal, limit: int, offset: int, before_id: int | None = None
) -> list[User]:
    """The account's users, newest first; ``before_id``: those older than that user (keyset,
    on ``ix_users_account_id_id``)."""
    q = sa.select(User).where(User.account_id == principal.account_id)
    if before_id is not None:
        q = q.where(User.id < before_id)
    return list(session.scalars(q.order_by(User.id.desc()).limit(limit).offset(offset)))


def create_user(
    *, session: Session, principal: Principal, email: str, name: str | None, role: str
) -> tuple[User, str]:
    principal.require_admin()
    if role not in ROLES:
        raise Invalid("role must be admin or member", details={"field": "role"})
    email = normalize_address(email)
    held = session.scalar(
        sa.select(Connection).where(
            Connection.account_id == principal.account_id, Connection.address == email
        )
    )
    if held is not None:
        # C7: an address maps to at most one user, always the same — one already connected
        # (by someone, or as a team address) cannot become another user's primary email.
        holder = (
            {"kind": "user", "id": held.user_id}
            if held.kind == "personal"
            else {"kind": "inbox", "id": held.inbox_id}
        )
        raise Conflict(
            f"{email} is already connected",
            code="address_already_connected",
            details={"holder": holder},
        )
    user = User(
        account_id=principal.account_id,
        email=email,
        name=name,
        role=role,
        never_log=[],
    )
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "a user with this email already exists", code="user_exists", details={"email": email}
        ) from exc
    bump_config_version(session=session, account_id=user.account_id)
    return user, issue_token(session=session, user=user)


def update_user(
    *,
    session: Session,
    principal: Principal,
    user_id: int,
    name: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    fields: set[str],
) -> User:
    principal.require_admin()
    user = get_user(session=session, principal=principal, user_id=user_id)
    if "role" in fields:
        if role not in ROLES:
            raise Invalid("role must be admin or member", details={"field": "role"})
        user.role = role
    if "name" in fields:
        user.name = name
    if "active" in fields and active is not None:
        if user.id == principal.user_id and not active:
            raise Invalid("an admin cannot deactivate themselves", code="cannot_deactivate_self")
        user.active = active
    session.flush()
    bump_config_version(session=session, account_id=user.account_id)
    return user


def check_self_or_admin(principal: Principal, user: User) -> None:
    if not (principal.is_admin or principal.user_id == user.id):
        raise Forbidden("only the user or an admin may do this")


def set_defaults(
    *,
    session: Session,
    principal: Principal,
    user_id: int,
    log: bool,
    track: bool,
    never_log: list[str],
) -> User:
    user = get_user(session=session, principal=principal, user_id=user_id)
    check_self_or_admin(principal, user)
    try:
        entries = []
        for entry in never_log:
            norm = normalize_never_log_entry(entry)
            if norm not in entries:
                entries.append(norm)
    except ValueError as exc:
        raise Invalid(str(exc), details={"field": "never_log"}) from exc
    user.default_log, user.default_track, user.never_log = log, track, entries
    session.flush()
    bump_config_version(session=session, account_id=user.account_id)
    return user

"""Team inboxes: members, forwarding address and the ordered routing rules (§5)."""

from __future__ import annotations

from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.crypto import new_intake_token
from shared.db.models import InboxMember, RoutingRule, TeamInbox, User
from shared.errors import Invalid, NotFound
from shared.principal import Principal
from shared.rules.schema import Rule
from shared.services.accounts import bump_config_version


def member_ids(*, session: Session, inbox_id: int) -> list[int]:
    q = sa.select(InboxMember.user_id).where(InboxMember.inbox_id == inbox_id)
    return sorted(session.scalars(q))


def members_of(*, session: Session, inbox_ids: list[int]) -> dict[int, list[int]]:
    """Each inbox's member ids (sorted), in one query for a page of inboxes."""
    found: dict[int, list[int]] = {i: [] for i in inbox_ids}
    if inbox_ids:
        q = sa.select(InboxMember.inbox_id, InboxMember.user_id).where(
            InboxMember.inbox_id.in_(inbox_ids)
        )
        for inbox_id, user_id in session.execute(q.order_by(InboxMember.user_id)):
            found[inbox_id].append(user_id)
    return found


def _check_users(*, session: Session, account_id: int | None, user_ids: set[int]) -> None:
    if not user_ids:
        return
    found = set(
        session.scalars(
            sa.select(User.id).where(User.account_id == account_id, User.id.in_(user_ids))
        )
    )
    missing = sorted(user_ids - found)
    if missing:
        raise Invalid("unknown user", code="unknown_user", details={"user_ids": missing})


def can_see_inbox(*, session: Session, principal: Principal, inbox: TeamInbox) -> bool:
    if inbox.account_id != principal.account_id:
        return False
    return principal.is_admin or principal.user_id in member_ids(session=session, inbox_id=inbox.id)


def get_inbox(*, session: Session, principal: Principal, inbox_id: int) -> TeamInbox:
    inbox = session.get(TeamInbox, inbox_id)
    if inbox is None or not can_see_inbox(session=session, principal=principal, inbox=inbox):
        raise NotFound("inbox not found")
    return inbox


def list_inboxes(
    *,
    session: Session,
    principal: Principal,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[TeamInbox]:
    """The inboxes the caller sees (admins: all; members: theirs), newest first;
    ``before_id``: those older than that inbox (keyset, on ``ix_team_inboxes_account_id_id``;
    a member's through ``ix_inbox_members_user_id``)."""
    q = sa.select(TeamInbox).where(TeamInbox.account_id == principal.account_id)
    if not principal.is_admin:
        q = q.join(InboxMember, InboxMember.inbox_id == TeamInbox.id).where(
            InboxMember.user_id == principal.user_id
        )
    if before_id is not None:
        q = q.where(TeamInbox.id < before_id)
    return list(session.scalars(q.order_by(TeamInbox.id.desc()).limit(limit).offset(offset)))


def _set_members(*, session: Session, inbox: TeamInbox, user_ids: list[int]) -> None:
    session.execute(sa.delete(InboxMember).where(InboxMember.inbox_id == inbox.id))
    for uid in sorted(set(user_ids)):
        session.add(InboxMember(inbox_id=inbox.id, user_id=uid))


def create_inbox(
    *,
    session: Session,
    principal: Principal,
    name: str,
    sender_name: str | None,
    member_ids_: list[int],
) -> TeamInbox:
    principal.require_admin()
    if not name.strip():
        raise Invalid("name must not be empty", details={"field": "name"})
    _check_users(session=session, account_id=principal.account_id, user_ids=set(member_ids_))
    inbox = TeamInbox(
        account_id=principal.account_id,
        name=name.strip(),
        sender_name=sender_name,
        forward_token="team-" + new_intake_token(),
    )
    session.add(inbox)
    session.flush()
    _set_members(session=session, inbox=inbox, user_ids=member_ids_)
    session.flush()
    bump_config_version(session=session, account_id=inbox.account_id)
    return inbox


class InboxChanges(TypedDict, total=False):
    """The fields a PATCH of an inbox names (the absent ones stay as they are)."""

    name: str | None
    sender_name: str | None
    member_ids: list[int] | None


def update_inbox(
    *, session: Session, principal: Principal, inbox_id: int, fields: InboxChanges
) -> TeamInbox:
    principal.require_admin()
    inbox = get_inbox(session=session, principal=principal, inbox_id=inbox_id)
    if "name" in fields:
        name = str(fields["name"] or "").strip()
        if not name:
            raise Invalid("name must not be empty", details={"field": "name"})
        inbox.name = name
    if "sender_name" in fields:
        inbox.sender_name = fields["sender_name"]
    if "member_ids" in fields:
        ids = list(fields["member_ids"] or [])
        _check_users(session=session, account_id=principal.account_id, user_ids=set(ids))
        _set_members(session=session, inbox=inbox, user_ids=ids)
    session.flush()
    return inbox


def get_rules(*, session: Session, inbox_id: int) -> list[Rule]:
    q = (
        sa.select(RoutingRule)
        .where(RoutingRule.inbox_id == inbox_id)
        .order_by(RoutingRule.position)
    )
    return [
        # "stored": a rule saved before regexes ran on RE2 still loads (its pattern RE2
        # cannot run never matches) instead of failing every message of the inbox.
        Rule.model_validate(
            {"name": r.name, "conditions": r.conditions, "action": r.action, "tags": r.tags},
            context={"stored": True},
        )
        for r in session.scalars(q)
    ]


def replace_rules(
    *, session: Session, principal: Principal, inbox_id: int, rules: list[Rule]
) -> list[Rule]:
    principal.require_admin()
    inbox = get_inbox(session=session, principal=principal, inbox_id=inbox_id)
    wanted: set[int] = set()
    for rule in rules:
        wanted |= rule.referenced_user_ids()
    _check_users(session=session, account_id=inbox.account_id, user_ids=wanted)
    session.execute(sa.delete(RoutingRule).where(RoutingRule.inbox_id == inbox.id))
    session.flush()
    for pos, rule in enumerate(rules):
        data = rule.model_dump(exclude_none=True)
        session.add(
            RoutingRule(
                inbox_id=inbox.id,
                position=pos,
                name=rule.name,
                conditions=data.get("conditions", {}),
                action=data["action"],
                tags=rule.tags,
            )
        )
    session.flush()
    return get_rules(session=session, inbox_id=inbox.id)

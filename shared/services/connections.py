"""Connected addresses and every rule of §3 (C1–C7).

C1 is a database constraint (unique account+address, stored lowercase); the 409 names the holder.
C4 privacy is decided here, so every caller sees the same view of a personal connection. C7: a
personal connection is ``unverified`` — counting for nothing — until a login to its mailbox or an
admin proves the address its owner's; a user's primary email is theirs by being it, and nobody
else connects it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.models import Connection, FolderState, InboxMember, OAuthGrant, TeamInbox, User
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.mail.addresses import normalize_address
from shared.netsafety import HOST_NOT_ALLOWED, HostNotAllowed, HostNotFound, Resolver, check_host
from shared.networks import Networks
from shared.principal import Principal
from shared.services.account_facts import counts_as_owned
from shared.services.accounts import bump_config_version
from shared.services.inboxes import member_ids
from shared.timefmt import iso

SECURITY_MODES = ("ssl", "starttls", "none")
DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "none": 143}


def holder_of(
    *, session: Session, account_id: int, address: str, user_id: int | None = None
) -> dict[str, Any] | None:
    """Who holds ``address`` (C3): its connection's owner or inbox, or the user whose primary
    email it is (other than ``user_id``, who may connect their own)."""
    conn = session.scalar(
        sa.select(Connection).where(
            Connection.account_id == account_id, Connection.address == address
        )
    )
    if conn is None:
        owner = session.scalar(
            sa.select(User).where(User.account_id == account_id, User.email == address)
        )
        if owner is not None and owner.id != user_id:
            return {"kind": "user", "id": owner.id, "email": owner.email}
        return None
    if conn.kind == "personal":
        user = session.get(User, conn.user_id)
        return {"kind": "user", "id": conn.user_id, "email": user.email if user else None}
    inbox = session.get(TeamInbox, conn.inbox_id)
    return {"kind": "inbox", "id": conn.inbox_id, "name": inbox.name if inbox else None}


def _already_connected(
    *, session: Session, account_id: int, address: str, user_id: int | None = None
) -> Conflict:
    holder = holder_of(session=session, account_id=account_id, address=address, user_id=user_id)
    return Conflict(
        f"{address} is already connected",
        code="address_already_connected",
        details={"holder": holder},
    )


ServerCheck = Callable[[str, int], None]


def server_check(allowed: Networks, resolver: Resolver | None = None) -> ServerCheck:
    """Save-time check of a server a user names (§6 Network safety): 422 ``host_not_allowed``
    when the name resolves only to refused addresses. A name that does not resolve now is
    saved — the poller reports ``host_not_found`` — and every connect checks again anyway."""

    def check(host: str, port: int) -> None:
        try:
            if resolver is None:
                check_host(host, port, allowed)
            else:
                check_host(host, port, allowed, resolver)
        except HostNotFound:
            return
        except HostNotAllowed as exc:
            raise Invalid(
                str(exc), code=HOST_NOT_ALLOWED, details={"field": "imap.host", "host": host}
            ) from exc

    return check


# What an OAuth connection's owner may still change: the provider sets server and login.
OAUTH_EDITABLE = frozenset({"folders", "since"})


def _apply_imap(
    conn: Connection,
    imap: dict[str, Any],
    box: SecretBox,
    *,
    partial: bool,
    check: ServerCheck | None = None,
) -> None:
    if conn.oauth_provider is not None and set(imap) - OAUTH_EDITABLE:
        raise Invalid(
            "an OAuth connection's server and sign-in come from its provider: reconnect it to "
            "change them (only imap.folders and imap.since can be set)",
            code="oauth_managed",
            details={"fields": sorted(set(imap) - OAUTH_EDITABLE)},
        )
    security = imap.get("security", conn.imap_security if partial else "ssl")
    if security not in SECURITY_MODES:
        raise Invalid("imap.security must be ssl, starttls or none", details={"field": "imap"})
    for key in ("host", "username"):
        if not partial and not imap.get(key):
            raise Invalid(f"imap.{key} is required", details={"field": f"imap.{key}"})
    if not partial and not imap.get("password"):
        raise Invalid("imap.password is required", details={"field": "imap.password"})
    conn.imap_security = security
    if "host" in imap or not partial:
        if conn.imap_host != imap["host"] and conn.status not in ("auth_failed", "unverified"):
            conn.status = "pending"  # a new server: active only after its first good cycle
        conn.imap_host = imap["host"]
    if imap.get("port") is not None:
        conn.imap_port = int(imap["port"])
    elif not partial or conn.imap_port is None:
        conn.imap_port = DEFAULT_PORTS[security]
    if "username" in imap:
        conn.imap_username = imap["username"]
    if imap.get("password"):
        conn.imap_password_enc = box.encrypt(imap["password"])
        if conn.status == "auth_failed":  # new credentials: retries resume (§6)
            conn.status = "pending" if counts_as_owned(conn) else "unverified"
            conn.last_error = None
    if check is not None and conn.imap_host and ("host" in imap or "port" in imap):
        check(conn.imap_host, conn.imap_port or DEFAULT_PORTS[security])
    if "folders" in imap:
        conn.imap_folders = list(imap["folders"]) if imap["folders"] else None
    if "since" in imap:
        since = imap["since"]
        conn.imap_since = date.fromisoformat(since) if isinstance(since, str) else since


def resolve_owner(
    *,
    session: Session,
    principal: Principal,
    kind: str,
    user_id: int | None,
    inbox_id: int | None,
    meetings: bool = False,
) -> tuple[int | None, User | None]:
    """Who a new connection will belong to, checked against what ``principal`` may connect:
    (the personal owner's id, the owner) — (None, None) for a team connection."""
    principal.require_user()
    account_id = principal.account_id
    if kind not in ("personal", "team"):
        raise Invalid("kind must be personal or team", details={"field": "kind"})
    if kind == "team":
        principal.require_admin()
        if meetings:  # C2
            raise Invalid(
                "a team connection cannot be used for meetings", code="team_meetings_not_allowed"
            )
        if inbox_id is None or user_id is not None:
            raise Invalid("a team connection needs inbox_id (and no user_id)")
        inbox = session.get(TeamInbox, inbox_id)
        if inbox is None or inbox.account_id != account_id:
            raise Invalid("unknown inbox", code="unknown_inbox", details={"inbox_id": inbox_id})
        return None, None
    if inbox_id is not None:
        raise Invalid("a personal connection takes no inbox_id")
    user_id = principal.user_id if user_id is None else user_id
    if user_id != principal.user_id:
        principal.require_admin()
    owner = session.get(User, user_id)
    if owner is None or owner.account_id != account_id:
        raise Invalid("unknown user", code="unknown_user", details={"user_id": user_id})
    return user_id, owner


SAVE_SENT = ("auto", "always", "never")
SMTP_DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


def apply_smtp(
    conn: Connection,
    smtp: dict[str, Any],
    box: SecretBox,
    *,
    check: ServerCheck | None = None,
) -> None:
    """The server §9 sends through; username and password default to the IMAP ones. An OAuth
    connection's server comes from its provider: only ``save_sent`` may change."""
    if "save_sent" in smtp:
        if smtp["save_sent"] not in SAVE_SENT:
            raise Invalid("smtp.save_sent must be auto, always or never")
        conn.save_sent = smtp["save_sent"]
    rest = set(smtp) - {"save_sent"}
    if not rest:
        return
    if conn.oauth_provider is not None:
        raise Invalid(
            "an OAuth connection's SMTP server comes from its provider (only smtp.save_sent "
            "can be set)",
            code="oauth_managed",
            details={"fields": sorted(rest)},
        )
    security = smtp.get("security") or conn.smtp_security or "starttls"
    if security not in SECURITY_MODES:
        raise Invalid("smtp.security must be ssl, starttls or none", details={"field": "smtp"})
    host = smtp.get("host") or conn.smtp_host
    if not host:
        raise Invalid("smtp.host is required", details={"field": "smtp.host"})
    conn.smtp_host, conn.smtp_security = host, security
    conn.smtp_port = int(smtp.get("port") or conn.smtp_port or SMTP_DEFAULT_PORTS[security])
    if "username" in smtp:
        conn.smtp_username = smtp["username"]
    if smtp.get("password"):
        conn.smtp_password_enc = box.encrypt(smtp["password"])
    if check is not None and ("host" in smtp or "port" in smtp):
        try:
            check(conn.smtp_host, conn.smtp_port)
        except Invalid as exc:
            raise Invalid(
                str(exc), code=exc.code, details={"field": "smtp.host", "host": host}
            ) from None


def create_connection(
    *,
    session: Session,
    principal: Principal,
    box: SecretBox,
    address: str,
    kind: str,
    user_id: int | None = None,
    inbox_id: int | None = None,
    meetings: bool = False,
    imap: dict[str, Any] | None = None,
    smtp: dict[str, Any] | None = None,
    check: ServerCheck | None = None,
    proven_by_login: bool = False,
) -> Connection:
    """``proven_by_login``: the caller just signed in to this mailbox (OAuth, §10), which
    proves the address the owner's (C7)."""
    user_id, owner = resolve_owner(
        session=session,
        principal=principal,
        kind=kind,
        user_id=user_id,
        inbox_id=inbox_id,
        meetings=meetings,
    )
    account_id = principal.user_account_id()
    address = normalize_address(address)
    holder = holder_of(session=session, account_id=account_id, address=address, user_id=user_id)
    if holder:  # C1, C3, C7
        raise _already_connected(
            session=session, account_id=account_id, address=address, user_id=user_id
        )
    # C7: a user's own primary email is proven by being it; any other personal address waits
    # for a login to its mailbox (the poller) or an admin's confirmation.
    proven = kind == "team" or proven_by_login or (owner is not None and owner.email == address)
    conn = Connection(
        account_id=account_id,
        address=address,
        kind=kind,
        user_id=user_id,
        inbox_id=inbox_id if kind == "team" else None,
        meetings=meetings,
        status=("pending" if imap or proven_by_login else "active") if proven else "unverified",
        verified_at=utcnow() if kind == "personal" and proven else None,
    )
    if imap:
        _apply_imap(conn, imap, box, partial=False, check=check)
    if smtp:
        apply_smtp(conn, smtp, box, check=check)
    try:
        with session.begin_nested():
            session.add(conn)
            session.flush()
    except IntegrityError as exc:  # a concurrent connect won the race: the constraint decides
        raise _already_connected(
            session=session, account_id=account_id, address=address, user_id=user_id
        ) from exc
    bump_config_version(session=session, account_id=account_id)
    return conn


def _is_owner(principal: Principal, conn: Connection) -> bool:
    return conn.kind == "personal" and conn.user_id == principal.user_id


def visible_level(*, session: Session, principal: Principal, conn: Connection) -> str | None:
    """``full``, ``summary`` (an admin looking at someone's personal connection) or None (404)."""
    mine: set[int] = set()
    if conn.kind == "team" and not principal.is_admin and principal.kind == "user":
        assert conn.inbox_id is not None  # ck_connections_kind_owner: a team connection has one
        if principal.user_id in member_ids(session=session, inbox_id=conn.inbox_id):
            mine.add(conn.inbox_id)
    return _level(principal, conn, mine)


def get_connection(*, session: Session, principal: Principal, connection_id: int) -> Connection:
    conn = session.get(Connection, connection_id)
    if conn is None or visible_level(session=session, principal=principal, conn=conn) is None:
        raise NotFound("connection not found")
    return conn


def list_connections(
    *,
    session: Session,
    principal: Principal,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> list[Connection]:
    """The connections the caller may see (C4, C5), newest first; ``before_id``: those older
    than that one (keyset on ``ix_connections_account_id_id``)."""
    principal.require_user()
    q = sa.select(Connection).where(Connection.account_id == principal.account_id)
    if not principal.is_admin:
        mine = sa.select(InboxMember.inbox_id).where(InboxMember.user_id == principal.user_id)
        q = q.where(
            sa.or_(
                sa.and_(Connection.kind == "personal", Connection.user_id == principal.user_id),
                sa.and_(Connection.kind == "team", Connection.inbox_id.in_(mine)),
            )
        )
    if before_id is not None:
        q = q.where(Connection.id < before_id)
    return list(session.scalars(q.order_by(Connection.id.desc()).limit(limit).offset(offset)))


def connection_view(*, session: Session, principal: Principal, conn: Connection) -> dict[str, Any]:
    return connection_views(session=session, principal=principal, conns=[conn])[0]


def connection_views(
    *, session: Session, principal: Principal, conns: list[Connection]
) -> list[dict[str, Any]]:
    """The views of a page of connections in three queries whatever its length (the
    caller's inboxes, the folders, the OAuth expiries), not three per connection."""
    my_inboxes = set(
        session.scalars(
            sa.select(InboxMember.inbox_id).where(InboxMember.user_id == principal.user_id)
        )
        if principal.user_id is not None and not principal.is_admin
        else ()
    )
    levels = [_level(principal, c, my_inboxes) for c in conns]
    full = [c.id for c, level in zip(conns, levels, strict=True) if level == "full"]
    folders: dict[int, list[FolderState]] = {i: [] for i in full}
    expiries: dict[int, Any] = {}
    if full:
        for f in session.scalars(
            sa.select(FolderState)
            .where(FolderState.connection_id.in_(full))
            .order_by(FolderState.id)
        ):
            folders[f.connection_id].append(f)
        expiries = {
            cid: at
            for cid, at in session.execute(
                sa.select(OAuthGrant.connection_id, OAuthGrant.expires_at).where(
                    OAuthGrant.connection_id.in_(full)
                )
            )
        }
    return [
        _view(c, level, folders.get(c.id, []), expiries.get(c.id))
        for c, level in zip(conns, levels, strict=True)
    ]


def _level(principal: Principal, conn: Connection, my_inboxes: set[int]) -> str | None:
    """:func:`visible_level` with the caller's inboxes at hand."""
    if conn.account_id != principal.account_id or principal.kind != "user":
        return None
    if conn.kind == "personal":
        if _is_owner(principal, conn):
            return "full"
        return "summary" if principal.is_admin else None
    return "full" if principal.is_admin or conn.inbox_id in my_inboxes else None


def _view(
    conn: Connection, level: str | None, folders: list[FolderState], expires: Any
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": conn.id,
        "address": conn.address,
        "kind": conn.kind,
        "user_id": conn.user_id,
        "inbox_id": conn.inbox_id,
        "meetings": conn.meetings,
        "status": conn.status,
    }
    if level != "full":
        return view
    view |= {
        "last_sync_at": iso(conn.last_sync_at),
        "last_error": conn.last_error,
        "folders": [
            {
                "name": f.name,
                "uidvalidity": f.uidvalidity,
                "last_uid": f.last_uid,
                "messages_synced": f.messages_synced,
            }
            for f in folders
        ],
        "imap": None
        if conn.imap_host is None
        else {
            "host": conn.imap_host,
            "port": conn.imap_port,
            "security": conn.imap_security,
            "username": conn.imap_username,
            "auth": "oauth" if conn.oauth_provider else "password",
            "folders": conn.imap_folders,
            "since": conn.imap_since.isoformat() if conn.imap_since else None,
        },
        "smtp": None
        if conn.smtp_host is None
        else {
            "host": conn.smtp_host,
            "port": conn.smtp_port,
            "security": conn.smtp_security,
            "username": conn.smtp_username or conn.imap_username,
            "save_sent": conn.save_sent,
        },
        # The provider and when the current access token expires; never a token (C6).
        "oauth": None
        if conn.oauth_provider is None
        else {"provider": conn.oauth_provider, "expires_at": iso(expires)},
    }
    return view


def require_manager(*, session: Session, principal: Principal, conn: Connection) -> None:
    if conn.kind == "personal":
        if not _is_owner(principal, conn):
            raise Forbidden("only the owner changes a personal connection", code="not_owner")
    else:
        principal.require_admin()


def update_connection(
    *,
    session: Session,
    principal: Principal,
    box: SecretBox,
    connection_id: int,
    imap: dict[str, Any] | None,
    meetings: bool | None,
    check: ServerCheck | None = None,
    smtp: dict[str, Any] | None = None,
) -> Connection:
    conn = get_connection(session=session, principal=principal, connection_id=connection_id)
    require_manager(session=session, principal=principal, conn=conn)
    if meetings is not None:
        if meetings and conn.kind == "team":
            raise Invalid(
                "a team connection cannot be used for meetings", code="team_meetings_not_allowed"
            )
        conn.meetings = meetings
    if imap:
        _apply_imap(conn, imap, box, partial=conn.imap_host is not None, check=check)
    if smtp:
        apply_smtp(conn, smtp, box, check=check)
    session.flush()
    return conn


def delete_connection(*, session: Session, principal: Principal, connection_id: int) -> None:
    conn = get_connection(session=session, principal=principal, connection_id=connection_id)
    if conn.kind == "personal" and not _is_owner(principal, conn):
        owner = session.get(User, conn.user_id)
        # C3/C7: an admin removes a deactivated user's connection, or one never proven (it
        # holds an address without counting for anything).
        unproven = conn.verified_at is None
        if not (principal.is_admin and (unproven or owner is None or not owner.active)):
            raise Forbidden(
                "an admin may disconnect a personal connection only when its owner is "
                "deactivated or its address was never proven",
                code="owner_active",
            )
    elif conn.kind == "team":
        principal.require_admin()
    session.delete(conn)
    session.flush()
    bump_config_version(session=session, account_id=conn.account_id)


def request_sync(
    *, session: Session, principal: Principal, connection_id: int, since: date | None
) -> Connection:
    conn = get_connection(session=session, principal=principal, connection_id=connection_id)
    if not (_is_owner(principal, conn) or (conn.kind == "team" and principal.is_admin)):
        raise Forbidden("only the owner or an admin may sync this connection")
    if conn.imap_host is None:
        raise Invalid("this connection has no IMAP settings", code="no_imap")
    conn.backfill_since = since or conn.backfill_since
    conn.sync_requested_at = utcnow()
    session.flush()
    return conn


def verify_connection(*, session: Session, principal: Principal, connection_id: int) -> Connection:
    """C7: an admin confirms that a personal connection's address is its owner's."""
    principal.require_admin()
    conn = get_connection(session=session, principal=principal, connection_id=connection_id)
    if conn.verified_at is None:
        conn.verified_at = utcnow()
        if conn.status == "unverified":
            synced = conn.last_sync_at is not None
            conn.status = "pending" if conn.imap_host is not None and not synced else "active"
        session.flush()
        bump_config_version(session=session, account_id=conn.account_id)
    return conn

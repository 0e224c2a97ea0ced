"""The §4 logging decision: a pure function from plain facts to an outcome with its reasons.

Nothing here touches the database; the pipeline gathers the facts, calls :func:`decide` and
records what it returns. Every branch cites the §4 sentence it implements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import TypedDict, Unpack

from shared.account_settings import AccountSettings, matches_address_or_domain
from shared.rules import codes as c


@dataclass(frozen=True)
class Person:
    address: str
    name: str | None = None


@dataclass(frozen=True)
class UserFacts:
    id: int
    addresses: frozenset[str]  # primary email plus personal connected addresses
    active: bool = True
    log: bool = True
    never_log: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountFacts:
    settings: AccountSettings
    users: tuple[UserFacts, ...]
    # Users' and team connections' addresses and the intake addresses.
    internal_addresses: frozenset[str]

    def is_internal(self, address: str) -> bool:
        return address in self.internal_addresses or matches_address_or_domain(
            address, set(self.settings.internal_domains)
        )

    @cached_property
    def _by_address(self) -> dict[str, UserFacts]:
        # An address maps to at most one user (C7); the first user wins should data disagree.
        found: dict[str, UserFacts] = {}
        for user in self.users:
            for address in user.addresses:
                found.setdefault(address, user)
        return found

    def user_by_address(self, address: str | None) -> UserFacts | None:
        return self._by_address.get(address) if address else None


@dataclass(frozen=True)
class MessageFacts:
    source: str
    from_: Person | None
    to: tuple[Person, ...] = ()
    cc: tuple[Person, ...] = ()
    bcc: tuple[Person, ...] = ()  # source sent only: what we sent (never read from others' mail)
    in_team_inbox: bool = False  # source sent: a reply from a team inbox (joins its conversation)
    sender: Person | None = None
    kind: str = "normal"
    # bcc/forward: the outer From (the user asking to log); forward: extraction result.
    requester: Person | None = None
    forward_status: str = "not_forward"
    # team: found in the Sent folder; a skip rule matched.
    in_sent_folder: bool = False
    # Personal: the mailbox's copy of mail its owner sent through inboxlog with log: false.
    sent_unlogged: bool = False
    skipped_by_rule: bool = False
    # personal: the connection's owner; whether the thread already has a logged email.
    owner_id: int | None = None
    owner_proven: bool = True  # C7: the connection's address is proven the owner's
    is_reply_to_logged: bool = False
    # Addresses that are already contacts of the account.
    existing_contacts: frozenset[str] = frozenset()
    noreply_addresses: frozenset[str] = frozenset()
    # What the gateway found about the sender (SMTP intake only; codes.VERDICT_*).
    sender_verdict: str | None = None


@dataclass(frozen=True)
class ParticipantAction:
    address: str
    name: str | None
    action: str
    reason: str

    def as_dict(self) -> dict[str, str | None]:
        return {"address": self.address, "action": self.action, "reason": self.reason}


@dataclass(frozen=True)
class LoggingDecision:
    outcome: str
    codes: tuple[str, ...] = ()
    participants: tuple[ParticipantAction, ...] = ()
    acting_user_id: int | None = None
    logged_by_user_id: int | None = None
    direction: str = "incoming"
    # Team mail is kept in a conversation even when no contact is logged.
    keep_in_conversation: bool = False
    # Personal mail with logging off keeps nothing: no subject, no addresses (§4).
    redact: bool = False
    private_to_user_id: int | None = None

    @property
    def contacts_to_log(self) -> tuple[str, ...]:
        return tuple(p.address for p in self.participants if p.action != c.ACT_SKIPPED)

    @property
    def contacts_to_create(self) -> tuple[str, ...]:
        return tuple(p.address for p in self.participants if p.action == c.ACT_CREATED)


def _never_log(account: AccountFacts, user: UserFacts | None) -> set[str]:
    entries = set(account.settings.never_log)
    if user is not None:
        entries |= set(user.never_log)
    return entries


def _externals(account: AccountFacts, people: list[Person | None]) -> list[Person]:
    seen: set[str] = set()
    out: list[Person] = []
    for p in people:
        if p is None or not p.address or p.address in seen or account.is_internal(p.address):
            continue
        seen.add(p.address)
        out.append(p)
    return out


def _judge(
    people: list[Person],
    msg: MessageFacts,
    account: AccountFacts,
    never_log: set[str],
    *,
    may_create: bool,
) -> list[ParticipantAction]:
    """Per external participant: log, create and log, or skip — with the reason."""
    automated = msg.kind in c.AUTOMATED_KINDS
    actions = []
    for p in people:
        if matches_address_or_domain(p.address, never_log):
            actions.append(ParticipantAction(p.address, p.name, c.ACT_SKIPPED, c.R_NEVER_LOG))
        elif p.address in msg.existing_contacts:
            actions.append(ParticipantAction(p.address, p.name, c.ACT_LOGGED, c.R_EXISTING_CONTACT))
        elif not may_create:
            actions.append(ParticipantAction(p.address, p.name, c.ACT_SKIPPED, c.R_NOT_A_CONTACT))
        elif automated:
            actions.append(ParticipantAction(p.address, p.name, c.ACT_SKIPPED, c.R_AUTOMATED))
        elif p.address in msg.noreply_addresses:
            actions.append(ParticipantAction(p.address, p.name, c.ACT_SKIPPED, c.R_NOREPLY))
        elif not account.settings.create_contacts:
            actions.append(
                ParticipantAction(p.address, p.name, c.ACT_SKIPPED, c.R_CONTACTS_DISABLED)
            )
        else:
            actions.append(ParticipantAction(p.address, p.name, c.ACT_CREATED, c.R_NEW_CONTACT))
    return actions


def _skip_codes(
    msg: MessageFacts, externals: list[Person], actions: list[ParticipantAction]
) -> tuple[str, ...]:
    """Why nothing reached a contact timeline."""
    if not externals:
        return (c.INTERNAL_ONLY,)
    if all(a.reason == c.R_NEVER_LOG for a in actions):
        return (c.NEVER_LOG,)
    if msg.kind in c.AUTOMATED_KINDS:
        return (c.AUTOMATED_KINDS[msg.kind],)
    return (c.NO_CONTACTS,)


class _Attribution(TypedDict, total=False):
    """The fields of a :class:`LoggingDecision` a branch settles besides its outcome."""

    acting_user_id: int | None
    logged_by_user_id: int | None
    direction: str
    keep_in_conversation: bool
    private_to_user_id: int | None


def _outcome(
    msg: MessageFacts,
    externals: list[Person],
    actions: list[ParticipantAction],
    **kw: Unpack[_Attribution],
) -> LoggingDecision:
    if any(a.action != c.ACT_SKIPPED for a in actions):
        return LoggingDecision(c.LOGGED, (), tuple(actions), **kw)
    return LoggingDecision(
        c.SKIPPED,
        _skip_codes(msg, externals, actions),
        tuple(actions),
        **kw,
    )


def _decide_bcc(msg: MessageFacts, account: AccountFacts) -> LoggingDecision:
    # The acting user is the active user whose address is the From; BCC is an explicit request,
    # so it logs even when that user's defaults.log is false.
    user = account.user_by_address(msg.from_.address if msg.from_ else None)
    if user is None or not user.active:
        return LoggingDecision(c.REJECTED, (c.UNKNOWN_SENDER,), direction="outgoing")
    if msg.sender_verdict == c.VERDICT_REFUSED:  # the gateway refused this copy's sender
        return LoggingDecision(c.REJECTED, (c.SENDER_NOT_VERIFIED,), direction="outgoing")
    externals = _externals(account, [*msg.to, *msg.cc])
    actions = _judge(externals, msg, account, _never_log(account, user), may_create=True)
    return _outcome(
        msg,
        externals,
        actions,
        acting_user_id=user.id,
        logged_by_user_id=user.id,
        direction="outgoing",
    )


def _decide_forward(msg: MessageFacts, account: AccountFacts) -> LoggingDecision:
    # The acting user is the sender of the forward; the original is what gets logged.
    user = account.user_by_address(msg.requester.address if msg.requester else None)
    if user is None or not user.active:
        return LoggingDecision(c.REJECTED, (c.UNKNOWN_SENDER,))
    if msg.sender_verdict == c.VERDICT_REFUSED:
        return LoggingDecision(c.REJECTED, (c.SENDER_NOT_VERIFIED,))
    if msg.forward_status != "extracted" or msg.from_ is None:
        # Never a wrong contact: an unreadable forward fails instead of guessing.
        return LoggingDecision(c.FAILED, (c.UNPARSEABLE_FORWARD,), acting_user_id=user.id)
    direction = "outgoing" if account.is_internal(msg.from_.address) else "incoming"
    externals = _externals(account, [msg.from_, *msg.to, *msg.cc])
    actions = _judge(externals, msg, account, _never_log(account, user), may_create=True)
    return _outcome(
        msg,
        externals,
        actions,
        acting_user_id=user.id,
        logged_by_user_id=user.id,
        direction=direction,
    )


def _decide_team(msg: MessageFacts, account: AccountFacts) -> LoggingDecision:
    if msg.skipped_by_rule:
        return LoggingDecision(c.SKIPPED, (c.SKIPPED_BY_RULE,))
    from_internal = msg.from_ is not None and account.is_internal(msg.from_.address)
    # By SMTP anyone can write to a team address with one of our addresses in From: only an
    # authenticated From makes it one of our replies (§4).
    forged = from_internal and msg.sender_verdict == c.VERDICT_UNAUTHENTICATED
    outgoing = msg.in_sent_folder or (from_internal and not forged)
    author = None
    if outgoing:  # attributed to the user named in Sender, else in From
        author = account.user_by_address(msg.sender.address if msg.sender else None) or (
            account.user_by_address(msg.from_.address if msg.from_ else None)
        )
    externals = _externals(account, [msg.from_, *msg.to, *msg.cc])
    actions = _judge(externals, msg, account, _never_log(account, author), may_create=True)
    decision = _outcome(
        msg,
        externals,
        actions,
        logged_by_user_id=author.id if author else None,
        acting_user_id=author.id if author else None,
        direction="outgoing" if outgoing else "incoming",
        keep_in_conversation=True,
    )
    if forged:
        decision = dataclasses.replace(
            decision, codes=(*decision.codes, c.UNVERIFIED_INTERNAL_SENDER)
        )
    # Every message a team inbox takes in is kept in a conversation: "logged" even when no
    # contact timeline gets it; the codes still say why no contact did.
    if decision.outcome == c.SKIPPED:
        return dataclasses.replace(decision, outcome=c.LOGGED)
    return decision


def _decide_personal(msg: MessageFacts, account: AccountFacts) -> LoggingDecision:
    owner = next((u for u in account.users if u.id == msg.owner_id), None)
    private = msg.owner_id
    if not msg.owner_proven:
        # C7: until proven, a connection's mail is nobody's: nothing logged, nothing kept.
        return LoggingDecision(
            c.SKIPPED,
            (c.UNVERIFIED_CONNECTION,),
            redact=True,
            private_to_user_id=private,
            acting_user_id=msg.owner_id,
        )
    if owner is None or not owner.log or msg.sent_unlogged:
        # Nothing is logged and nothing is kept; the decision holds no subject or addresses.
        # (sent_unlogged: the sender chose not to log this one when sending it, §9.)
        return LoggingDecision(
            c.SKIPPED,
            (c.LOGGING_OFF,),
            redact=True,
            private_to_user_id=private,
            acting_user_id=msg.owner_id,
        )
    direction = (
        "outgoing"
        if msg.from_ is not None
        and (msg.from_.address in owner.addresses or account.is_internal(msg.from_.address))
        else "incoming"
    )
    kw: _Attribution = {
        "acting_user_id": owner.id,
        "private_to_user_id": private,
        "direction": direction,
    }
    if msg.kind in c.AUTOMATED_KINDS:  # personal sync never logs automated mail
        return LoggingDecision(c.SKIPPED, (c.AUTOMATED_KINDS[msg.kind],), **kw)
    if account.settings.personal_logging == "replies_only" and not msg.is_reply_to_logged:
        return LoggingDecision(c.SKIPPED, (c.NOT_A_REPLY,), **kw)
    externals = _externals(account, [msg.from_, *msg.to, *msg.cc])
    # Personal sync never creates contacts: only participants already contacts are logged.
    actions = _judge(externals, msg, account, _never_log(account, owner), may_create=False)
    return _outcome(msg, externals, actions, **(kw | {"logged_by_user_id": owner.id}))


def _decide_sent(msg: MessageFacts, account: AccountFacts) -> LoggingDecision:
    # Sent through inboxlog (§9): logged by the bcc rules, the sender as acting user; Bcc
    # recipients are participants like To and Cc.
    user = next((u for u in account.users if u.id == msg.owner_id), None)
    if user is None or not user.active:
        return LoggingDecision(c.REJECTED, (c.UNKNOWN_SENDER,), direction="outgoing")
    externals = _externals(account, [*msg.to, *msg.cc, *msg.bcc])
    actions = _judge(externals, msg, account, _never_log(account, user), may_create=True)
    decision = _outcome(
        msg,
        externals,
        actions,
        acting_user_id=user.id,
        logged_by_user_id=user.id,
        direction="outgoing",
        keep_in_conversation=msg.in_team_inbox,
    )
    if msg.in_team_inbox and decision.outcome == c.SKIPPED:  # kept in its conversation
        return dataclasses.replace(decision, outcome=c.LOGGED)
    return decision


_BY_SOURCE = {
    "bcc": _decide_bcc,
    "sent": _decide_sent,
    "forward": _decide_forward,
    "team": _decide_team,
    "personal": _decide_personal,
}


def decide(msg: MessageFacts, account: AccountFacts) -> LoggingDecision:
    """The outcome, reason codes and per-participant actions for one message taken in."""
    decider = _BY_SOURCE.get(msg.source)
    if decider is None:
        raise ValueError(f"unknown source {msg.source!r}")
    return decider(msg, account)

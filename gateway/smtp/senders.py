"""What the gateway finds about the sender of each copy of a message, per route (§4, §6).

- The account's ``bcc_address`` / ``forward_address``: sender verification per the account's
  ``sender_verification`` — a copy that fails it is ``refused`` (recorded as rejected when another
  route of the same transaction accepts the message; 550 when none does).
- A team inbox's ``forward_address`` takes mail from anyone; a message there whose From is
  internal claims to be one of our own people's replies, which only an authenticated From may do
  (DKIM aligned with the From domain, or a trusted Authentication-Results pass): the copy is
  ``authenticated`` or ``unauthenticated``, and the worker decides with that.

DKIM may look keys up in DNS: the handler runs :func:`judge` in a thread when
:func:`may_check_signatures` says so, and on the event loop otherwise (a header parse).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.smtp.directory import Route
from gateway.smtp.verify import DnsFunc, dkim_pass, header_from, trusted_auth_results_pass
from shared.rules import codes
from shared.rules.logging_decision import AccountFacts

# The values of stored_messages.sender_verdict, named once in shared/rules/codes.py.
REFUSED = codes.VERDICT_REFUSED
AUTHENTICATED = codes.VERDICT_AUTHENTICATED
UNAUTHENTICATED = codes.VERDICT_UNAUTHENTICATED


@dataclass(frozen=True)
class Copy:
    route: Route
    verdict: str | None  # REFUSED, AUTHENTICATED, UNAUTHENTICATED or None (nothing to say)


def _authenticated(raw: bytes, address: str, facts: AccountFacts, dnsfunc: DnsFunc | None) -> bool:
    domain = address.rpartition("@")[2]
    trusted = frozenset(facts.settings.trusted_authserv_ids)
    return trusted_auth_results_pass(raw, domain, trusted) or dkim_pass(raw, domain, dnsfunc)


def _sender_ok(
    raw: bytes, sender: str | None, facts: AccountFacts, dnsfunc: DnsFunc | None
) -> bool:
    mode = facts.settings.sender_verification
    if mode == "off":
        return True
    user = facts.user_by_address(sender)
    if sender is None or user is None or not user.active:
        return False
    return mode == "known_sender" or _authenticated(raw, sender, facts, dnsfunc)


def may_check_signatures(
    sender: str | None, routes: list[Route], facts: dict[int, AccountFacts]
) -> bool:
    """Whether judging these copies may verify DKIM (DNS lookups: run it in a thread)."""
    for route in routes:
        account = facts.get(route.account_id)
        if account is None or sender is None:
            continue
        if route.kind == "team" and account.is_internal(sender):
            return True
        if route.kind != "team" and account.settings.sender_verification == "dkim":
            return True
    return False


def judge(
    raw: bytes,
    routes: list[Route],
    facts: dict[int, AccountFacts],
    dnsfunc: DnsFunc | None = None,
    sender: str | None = None,
) -> list[Copy]:
    """One copy per route, with what was found about its sender (the header From, read from
    ``raw`` unless given)."""
    sender = sender if sender is not None else header_from(raw)
    copies: list[Copy] = []
    for route in routes:
        account = facts.get(route.account_id)
        if account is None:  # the account vanished: nothing can be accepted for it
            copies.append(Copy(route, REFUSED))
        elif route.kind == "team":
            verdict = None
            if sender is not None and account.is_internal(sender):
                ok = _authenticated(raw, sender, account, dnsfunc)
                verdict = AUTHENTICATED if ok else UNAUTHENTICATED
            copies.append(Copy(route, verdict))
        else:
            ok = _sender_ok(raw, sender, account, dnsfunc)
            copies.append(Copy(route, None if ok else REFUSED))
    return copies

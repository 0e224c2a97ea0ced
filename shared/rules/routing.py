"""§5 routing rules as a pure function: the first rule whose conditions all match fires.

Like Mailman's rules, every evaluation records its hits and misses, so the dry-run endpoint and
the decision can say which rule fired and why each earlier one did not.

Evaluation is linear in the message: regular expressions run on RE2, compiled once per pattern
(:func:`shared.rules.schema.compile_pattern`), and the subject and body are case-folded once per
message, however many rules look at them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import re2

from shared.rules.schema import (
    AssignContactOwner,
    AssignUser,
    Close,
    RoundRobin,
    Rule,
    Skip,
    compile_pattern,
)


@dataclass(frozen=True)
class RoutingFacts:
    from_address: str | None
    to_addresses: frozenset[str]  # the team address(es) that received it
    subject: str
    body: str
    headers: Callable[[str], tuple[str, ...]]
    is_contact: bool
    contact_owner_id: int | None = None
    active_user_ids: frozenset[int] = frozenset()

    @cached_property
    def folded_subject(self) -> str:
        return self.subject.casefold()

    @cached_property
    def folded_body(self) -> str:
        return self.body.casefold()


@dataclass(frozen=True)
class RoutingResult:
    matched: int | None = None
    rule_name: str | None = None
    action: dict[str, Any] | None = None
    tags: tuple[str, ...] = ()
    trace: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def skip(self) -> bool:
        return bool(self.action and self.action["type"] == "skip")


def _domain_matches(address: str | None, domains: list[str]) -> bool:
    if not address:
        return False
    domain = address.rpartition("@")[2]
    return any(domain == d or domain.endswith("." + d) for d in domains)


def _contains_any(folded: str, needles: list[str]) -> bool:
    return any(n.casefold() in folded for n in needles)


def _search(pattern: str, text: str) -> bool:
    try:
        compiled = compile_pattern(pattern)
    except re2.error:  # stored before RE2 (see shared.rules.schema): it never matches
        return False
    return compiled.search(text) is not None


def failed_conditions(rule: Rule, facts: RoutingFacts) -> list[str]:
    """The names of the conditions of ``rule`` that ``facts`` do not meet."""
    c = rule.conditions
    failed = []
    if c.from_address is not None and (facts.from_address or "") not in c.from_address:
        failed.append("from_address")
    if c.from_domain is not None and not _domain_matches(facts.from_address, c.from_domain):
        failed.append("from_domain")
    if c.to_address is not None and not facts.to_addresses & set(c.to_address):
        failed.append("to_address")
    if c.subject_contains is not None and not _contains_any(
        facts.folded_subject, c.subject_contains
    ):
        failed.append("subject_contains")
    if c.body_contains is not None and not _contains_any(facts.folded_body, c.body_contains):
        failed.append("body_contains")
    if c.subject_regex is not None and not _search(c.subject_regex, facts.subject):
        failed.append("subject_regex")
    if c.header is not None and not any(
        _search(c.header.pattern, v) for v in facts.headers(c.header.name)
    ):
        failed.append("header")
    if c.is_contact is not None and c.is_contact != facts.is_contact:
        failed.append("is_contact")
    return failed


def _resolve(rule: Rule, facts: RoutingFacts) -> tuple[dict[str, Any] | None, str | None]:
    """The concrete action, or (None, why) when the rule falls through."""
    a = rule.action
    if isinstance(a, AssignUser):
        if a.user_id not in facts.active_user_ids:
            return None, "user_inactive"
        return {"type": "assign_user", "user_id": a.user_id}, None
    if isinstance(a, RoundRobin):
        users = [u for u in a.user_ids if u in facts.active_user_ids]
        if not users:
            return None, "no_active_users"
        return {"type": "round_robin", "user_ids": users}, None
    if isinstance(a, AssignContactOwner):
        if facts.contact_owner_id is None:
            return None, "contact_has_no_owner"
        return {"type": "assign_contact_owner", "user_id": facts.contact_owner_id}, None
    if isinstance(a, Close):
        return {"type": "close"}, None
    assert isinstance(a, Skip)
    return {"type": "skip"}, None


def route(rules: list[Rule], facts: RoutingFacts) -> RoutingResult:
    trace: list[dict[str, Any]] = []
    for index, rule in enumerate(rules):
        failed = failed_conditions(rule, facts)
        if failed:
            trace.append(
                {"index": index, "name": rule.name, "matched": False, "failed_conditions": failed}
            )
            continue
        action, why = _resolve(rule, facts)
        if action is None:
            trace.append(
                {
                    "index": index,
                    "name": rule.name,
                    "matched": False,
                    "failed_conditions": [],
                    "fell_through": why,
                }
            )
            continue
        trace.append({"index": index, "name": rule.name, "matched": True, "failed_conditions": []})
        return RoutingResult(index, rule.name, action, tuple(rule.tags), tuple(trace))
    return RoutingResult(trace=tuple(trace))


def pick_round_robin(user_ids: list[int], counts: dict[str, int]) -> int:
    """The user with the fewest assignments so far (ties: order in the rule) — counts stay
    within one of each other as long as the caller serializes updates."""
    return min(user_ids, key=lambda u: (counts.get(str(u), 0), user_ids.index(u)))

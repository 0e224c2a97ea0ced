"""§5 routing rules: every condition, every action, first match wins, with a trace."""

from __future__ import annotations

from shared.rules.routing import RoutingFacts, pick_round_robin, route
from shared.rules.schema import Rule


def facts(**kw: object) -> RoutingFacts:
    base = dict(
        from_address="a@mail.x.jp",
        to_addresses=frozenset({"sales@ours.example"}),
        subject="URGENT 見積のお願い",
        body="Please send a Quote",
        headers=lambda n: {"x-priority": ("1 (Highest)",)}.get(n.lower(), ()),
        is_contact=True,
        contact_owner_id=7,
        active_user_ids=frozenset({7, 8, 9}),
    )
    base.update(kw)
    return RoutingFacts(**base)  # type: ignore[arg-type]


def rule(
    conditions: dict, action: dict | None = None, name: str = "r", tags: list[str] | None = None
) -> Rule:
    return Rule.model_validate(
        {
            "name": name,
            "conditions": conditions,
            "action": action or {"type": "assign_user", "user_id": 7},
            "tags": tags or [],
        }
    )


CONDITIONS_MATCHING = {
    "from_address": ["a@mail.x.jp"],
    "from_domain": ["x.jp"],  # subdomains match
    "to_address": ["sales@ours.example"],
    "subject_contains": ["見積"],
    "body_contains": ["quote"],  # case-insensitive
    "subject_regex": "(?i)urgent",
    "header": {"name": "X-Priority", "pattern": "^1"},
    "is_contact": True,
}
CONDITIONS_FAILING = {
    "from_address": ["b@x.jp"],
    "from_domain": ["y.jp"],
    "to_address": ["support@ours.example"],
    "subject_contains": ["請求"],
    "body_contains": ["invoice"],
    "subject_regex": "^Re:",
    "header": {"name": "X-Priority", "pattern": "^5"},
    "is_contact": False,
}


def test_each_condition_matches_and_fails_alone() -> None:
    for name, value in CONDITIONS_MATCHING.items():
        assert route([rule({name: value})], facts()).matched == 0, name
    for name, value in CONDITIONS_FAILING.items():
        result = route([rule({name: value})], facts())
        assert result.matched is None, name
        assert result.trace[0]["failed_conditions"] == [name]


def test_all_conditions_must_match_and_empty_matches_everything() -> None:
    assert route([rule(CONDITIONS_MATCHING)], facts()).matched == 0
    result = route([rule({**CONDITIONS_MATCHING, "is_contact": False})], facts())
    assert result.matched is None
    assert route([rule({})], facts(from_address=None)).matched == 0


def test_domain_condition_is_not_a_suffix_match() -> None:
    assert (
        route([rule({"from_domain": ["x.jp"]})], facts(from_address="a@evilx.jp")).matched is None
    )


def test_first_match_wins_with_trace_of_earlier_misses() -> None:
    rules = [
        rule({"subject_contains": ["invoice"]}, name="billing"),
        rule({"from_domain": ["x.jp"]}, {"type": "close"}, name="apac", tags=["apac"]),
        rule({}, name="catch-all"),
    ]
    result = route(rules, facts())
    assert (result.matched, result.rule_name, result.action, result.tags) == (
        1,
        "apac",
        {"type": "close"},
        ("apac",),
    )
    assert result.trace == (
        {
            "index": 0,
            "name": "billing",
            "matched": False,
            "failed_conditions": ["subject_contains"],
        },
        {"index": 1, "name": "apac", "matched": True, "failed_conditions": []},
    )


def test_no_match_is_open_and_unassigned() -> None:
    result = route([rule({"from_domain": ["nope.example"]})], facts())
    assert (result.matched, result.action, result.skip) == (None, None, False)


def test_actions() -> None:
    assert route([rule({}, {"type": "assign_user", "user_id": 8})], facts()).action == {
        "type": "assign_user",
        "user_id": 8,
    }
    assert route([rule({}, {"type": "round_robin", "user_ids": [9, 42, 8]})], facts()).action == {
        "type": "round_robin",
        "user_ids": [9, 8],
    }  # deactivated/unknown users skipped
    assert route([rule({}, {"type": "assign_contact_owner"})], facts()).action == {
        "type": "assign_contact_owner",
        "user_id": 7,
    }
    assert route([rule({}, {"type": "skip"})], facts()).skip


def test_contact_owner_rule_falls_through_without_an_owner() -> None:
    rules = [
        rule({}, {"type": "assign_contact_owner"}, name="owner"),
        rule({}, {"type": "close"}, name="next"),
    ]
    result = route(rules, facts(contact_owner_id=None))
    assert result.rule_name == "next"
    assert result.trace[0] == {
        "index": 0,
        "name": "owner",
        "matched": False,
        "failed_conditions": [],
        "fell_through": "contact_has_no_owner",
    }


def test_round_robin_pick_is_fair() -> None:
    counts: dict[str, int] = {}
    for _ in range(30):
        u = pick_round_robin([7, 8, 9], counts)
        counts[str(u)] = counts.get(str(u), 0) + 1
    assert counts == {"7": 10, "8": 10, "9": 10}

"""Routing-rule regexes run on RE2 (spec §5, §6 Bounded work): linear time whatever the pattern,
refused when saved if RE2 cannot run them, compiled once per pattern."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from shared.rules import schema
from shared.rules.routing import RoutingFacts, route
from shared.rules.schema import MAX_PATTERN_LENGTH, Rule, compile_pattern
from tests.conftest import Api

CEILING = 10.0  # seconds; a backtracking engine needs longer than the universe has


def facts(subject: str = "hello", header: str = "1", body: str = "") -> RoutingFacts:
    return RoutingFacts(
        from_address="ken@customer.example",
        to_addresses=frozenset({"sales@ours.example"}),
        subject=subject,
        body=body,
        headers=lambda n: (header,) if n.lower() == "x-priority" else (),
        is_contact=False,
        active_user_ids=frozenset({7}),
    )


def rule(conditions: dict[str, object]) -> Rule:
    return Rule.model_validate(
        {"name": "r", "conditions": conditions, "action": {"type": "assign_user", "user_id": 7}}
    )


@pytest.mark.bound
def test_bound_nested_quantifier_on_a_long_subject_is_instant_and_right() -> None:
    evil = "a" * 100_000 + "!"
    start = time.perf_counter()
    miss = route([rule({"subject_regex": "(a+)+$"})], facts(subject=evil))
    hit = route([rule({"subject_regex": "(a+)+!$"})], facts(subject=evil))
    by_header = rule({"header": {"name": "X-Priority", "pattern": "^(a|a)*$"}})
    header = route([by_header], facts(header=evil))
    assert time.perf_counter() - start < CEILING
    assert miss.matched is None and miss.trace[0]["failed_conditions"] == ["subject_regex"]
    assert hit.matched == 0
    assert header.matched is None and header.trace[0]["failed_conditions"] == ["header"]


@pytest.mark.bound
def test_bound_contains_conditions_fold_the_body_once() -> None:
    body = "x" * 2_000_000 + " QUOTE"
    rules = [rule({"body_contains": [f"missing {i}"]}) for i in range(300)]
    rules.append(rule({"body_contains": ["quote"]}))
    start = time.perf_counter()
    result = route(rules, facts(body=body))
    assert time.perf_counter() - start < CEILING
    assert result.matched == 300


def test_case_flags_and_re2_syntax_work() -> None:
    assert route([rule({"subject_regex": "(?i)urgent"})], facts(subject="So URGENT")).matched == 0
    assert route([rule({"subject_regex": r"\pN{3}"})], facts(subject="order 123")).matched == 0
    assert route([rule({"subject_regex": "^見積"})], facts(subject="見積のお願い")).matched == 0


@pytest.mark.parametrize(
    "pattern", [r"(a)\1", "(?=x)", "(?!x)y", "(?<=a)b", "(unclosed", "[z-a]", "a{2000}"]
)
def test_patterns_re2_cannot_run_are_refused(pattern: str) -> None:
    for conditions in ({"subject_regex": pattern}, {"header": {"name": "X", "pattern": pattern}}):
        with pytest.raises(ValidationError, match="regular expression"):
            rule(conditions)


def test_pattern_size_is_bounded() -> None:
    with pytest.raises(ValidationError, match="longer than"):
        rule({"subject_regex": "a" * (MAX_PATTERN_LENGTH + 1)})
    # Short to write, huge once compiled: over RE2's memory bound.
    with pytest.raises(ValidationError, match="regular expression"):
        rule({"subject_regex": "((((a{100}){100}){100}){100})"})
    rule({"subject_regex": "a" * MAX_PATTERN_LENGTH})


def test_patterns_are_compiled_once() -> None:
    compile_pattern.cache_clear()
    rules = [rule({"subject_regex": "(?i)quote"})]
    for _ in range(50):
        route(rules, facts(subject="Quote"))
    info = compile_pattern.cache_info()
    assert info.misses == 1 and info.hits >= 50


def test_stored_rules_keep_old_patterns_which_never_match() -> None:
    stored = Rule.model_validate(
        {
            "name": "old",
            "conditions": {"subject_regex": "(?=q)quote"},
            "action": {"type": "close"},
        },
        context={"stored": True},
    )
    result = route([stored], facts(subject="quote"))
    assert result.matched is None and result.trace[0]["failed_conditions"] == ["subject_regex"]
    assert schema.MAX_PATTERN_LENGTH == MAX_PATTERN_LENGTH


def test_api_refuses_backreferences_and_lookarounds_with_422(api: Api) -> None:
    admin = api.new_account()["token"]
    inbox = api.call("POST", "/v1/inboxes", admin, 201, json={"name": "Sales"})
    path = f"/v1/inboxes/{inbox['id']}/rules"
    for conditions in (
        {"subject_regex": r"(a)\1"},
        {"subject_regex": "(?=x)"},
        {"header": {"name": "X-Priority", "pattern": r"(?<!x)1"}},
        {"subject_regex": "a" * (MAX_PATTERN_LENGTH + 1)},
    ):
        items = [{"name": "r", "conditions": conditions, "action": {"type": "close"}}]
        err = api.call("PUT", path, admin, 422, json={"items": items})
        assert err["error"]["code"] == "validation_error", conditions
    assert api.call("GET", path, admin, 200)["items"] == []
    conditions = {"subject_regex": "(?i)^urgent"}
    ok = [{"name": "r", "conditions": conditions, "action": {"type": "close"}}]
    saved = api.call("PUT", path, admin, 200, json={"items": ok})["items"]
    assert saved[0]["conditions"]["subject_regex"] == "(?i)^urgent"

"""The §5 routing-rule schema: validated when saved, so evaluation never meets a bad rule.

Regular expressions (``subject_regex``, ``header.pattern``) are RE2 syntax and run on RE2, whose
searches take time linear in the text (spec §6 Bounded work): a pattern RE2 cannot compile —
a backreference, a lookaround — or one longer than :data:`MAX_PATTERN_LENGTH`, or one whose
compiled program needs more than :data:`PATTERN_MAX_MEM`, is refused when saved (the API
answers 422). Rules read back from storage are validated with ``context={"stored": True}``:
a pattern saved before these checks is kept, and a condition RE2 cannot run never matches.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal, Protocol, cast

import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_PATTERN_LENGTH = 1000
PATTERN_MAX_MEM = 1 << 20  # bytes for RE2's compiled program and its DFA cache


class CompiledPattern(Protocol):
    def search(self, text: str) -> object | None: ...


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> CompiledPattern:
    """The RE2 program for ``pattern``, compiled once per pattern (raises ``re2.error``)."""
    options = re2.Options()
    options.max_mem = PATTERN_MAX_MEM
    options.log_errors = False
    return cast(CompiledPattern, re2.compile(pattern, options))


def _check_pattern(pattern: str, info: ValidationInfo) -> str:
    if isinstance(info.context, dict) and info.context.get("stored"):
        return pattern
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"regular expression longer than {MAX_PATTERN_LENGTH} characters")
    try:
        compile_pattern(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid regular expression (RE2 syntax): {reason}") from None
    return pattern


class HeaderCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str, info: ValidationInfo) -> str:
        return _check_pattern(v, info)


class Conditions(BaseModel):
    """Every condition is optional; all given must match; ``{}`` matches everything."""

    model_config = ConfigDict(extra="forbid")
    from_address: list[str] | None = None
    from_domain: list[str] | None = None
    to_address: list[str] | None = None
    subject_contains: list[str] | None = None
    body_contains: list[str] | None = None
    subject_regex: str | None = None
    header: HeaderCondition | None = None
    is_contact: bool | None = None

    @field_validator("from_address", "to_address")
    @classmethod
    def _lower_addresses(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [a.strip().lower() for a in v]

    @field_validator("from_domain")
    @classmethod
    def _lower_domains(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [d.strip().lower().lstrip("@") for d in v]

    @field_validator("subject_regex")
    @classmethod
    def _regex(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _check_pattern(v, info)


# A user id the database can hold (32-bit INTEGER on PostgreSQL): a larger number names no
# user, and must be refused here rather than overflow the driver when the rule is checked.
UserId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class AssignUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["assign_user"]
    user_id: UserId


class RoundRobin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["round_robin"]
    user_ids: list[UserId] = Field(min_length=1)


class AssignContactOwner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["assign_contact_owner"]


class Close(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["close"]


class Skip(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["skip"]


Action = Annotated[
    AssignUser | RoundRobin | AssignContactOwner | Close | Skip, Field(discriminator="type")
]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    conditions: Conditions = Field(default_factory=Conditions)
    action: Action
    tags: list[str] = Field(default_factory=list)

    def referenced_user_ids(self) -> set[int]:
        if isinstance(self.action, AssignUser):
            return {self.action.user_id}
        if isinstance(self.action, RoundRobin):
            return set(self.action.user_ids)
        return set()

"""The §5 routing-rule schema: validated when saved, so evaluation never meets a bad rule."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _compile(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc
    return pattern


class HeaderCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    pattern: str

    _check = field_validator("pattern")(classmethod(lambda cls, v: _compile(v)))


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
    def _regex(cls, v: str | None) -> str | None:
        return None if v is None else _compile(v)


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

"""Who is asking: the operator, or a user of one account with a role."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. ``account_id``/``user_id`` are None for the operator."""

    kind: str  # "operator" | "user"
    account_id: int | None = None
    user_id: int | None = None
    role: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role == "admin"

    def require_user(self) -> None:
        if self.kind != "user":
            raise Forbidden("this route needs a user token", code="user_token_required")

    def user_account_id(self) -> int:
        """The account of a user caller; Forbidden for the operator, who has none."""
        self.require_user()
        assert self.account_id is not None  # every user principal is built with its account
        return self.account_id

    def require_admin(self) -> None:
        self.require_user()
        if not self.is_admin:
            raise Forbidden("this action needs the admin role", code="admin_required")

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("this route needs the operator token", code="operator_required")

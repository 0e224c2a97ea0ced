"""Domain errors, in two families that map onto transport behaviour.

API-facing errors carry the machine-readable ``code`` of the §7 error envelope. Processing
errors are either permanent (a failure record, no retry) or transient (retry with backoff).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain refuses; ``status`` and ``code`` feed the API error envelope."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Invalid(DomainError):
    status = 422
    code = "validation_error"


class PermanentError(Exception):
    """Processing can never succeed for this input: record a failure, keep the raw message."""


class TransientError(Exception):
    """Processing may succeed later (database or broker unavailable): retry with backoff."""

"""Domain errors, in two families that map onto transport behaviour.

API-facing errors carry the machine-readable ``code`` of the §7 error envelope. A processing
error is transient (retry with backoff) or, after a bounded number of attempts, a failure
record (worker/pipeline/driver.py).
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


class TransientError(Exception):
    """Processing may succeed later (database or broker unavailable): retry with backoff."""

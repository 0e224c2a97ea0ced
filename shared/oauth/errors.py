"""What can go wrong with a provider, sorted by what to do about it, in our own words.

A refusal of the grant (``invalid_grant``: revoked consent, a changed password, an expired
refresh token) needs the owner to reconnect; a refusal of the app (wrong tenant, no admin
consent, a bad client secret) needs an admin first. Both stop every attempt until the
connection is reconnected (``reauth_required``). Network errors and 5xx answers are not a
verdict: they are retried, and only a run of them longer than 15 minutes shows as ``error``.
Microsoft names its refusals with AADSTS numbers in ``error_description``; a number we know
sorts the refusal and is quoted (a number from our table, never the provider's text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# How long a provider may fail (network, 5xx) before the connection shows ``error`` (§10).
UNAVAILABLE_GRACE_SECONDS = 15 * 60

# AADSTS codes that need an admin: the app registration or the tenant, not the user's grant.
ADMIN_AADSTS = {
    50011: "the redirect URI is not registered for the app",
    50020: "the account is not in the app's tenant",
    50194: "the app is single-tenant: set the tenant",
    53003: "a conditional access policy blocks the sign-in",
    65001: "the app has not been consented in the tenant",
    90002: "the tenant does not exist",
    90094: "an admin must consent to the app",
    90095: "an admin must consent to the app",
    500011: "the IMAP/SMTP resource is not available in the tenant",
    700016: "the app is not registered in the tenant (wrong tenant?)",
    7000215: "the client secret is wrong",
    7000222: "the client secret has expired",
}
# AADSTS codes that reconnecting fixes.
RECONNECT_AADSTS = {
    50055: "the password has expired",
    50057: "the account is disabled",
    50076: "multi-factor authentication is required",
    50079: "multi-factor authentication must be set up",
    50126: "the password is wrong",
    50173: "the password was changed",
    65004: "the user declined consent",
    70000: "the grant is no longer valid",
    70008: "the refresh token has expired",
    700082: "the refresh token expired after a period of inactivity",
    700084: "the refresh token has expired",
}
# OAuth error codes (RFC 6749 §5.2) that are about the app, not the user's grant.
ADMIN_ERRORS = {
    "invalid_client": "the provider refused the app's client ID or secret",
    "unauthorized_client": "the app is not allowed this grant",
    "invalid_scope": "the app is not allowed the mail scopes",
}
_AADSTS = re.compile(r"\bAADSTS(\d{5,8})\b")


class ReauthRequired(Exception):
    """The provider refused the grant or the app: nothing is retried until a reconnect."""

    def __init__(self, sentence: str, *, admin: bool = False) -> None:
        super().__init__(sentence)
        self.sentence, self.admin = sentence, admin

    @property
    def last_error(self) -> str:
        return f"reauth_required: {self.sentence}"


class TokenUnavailable(Exception):
    """The provider could not be asked (network error, timeout, 5xx): retried with backoff.
    ``persisting``: it has failed for longer than UNAVAILABLE_GRACE_SECONDS."""

    def __init__(self, sentence: str, *, persisting: bool = False) -> None:
        super().__init__(sentence)
        self.sentence, self.persisting = sentence, persisting

    @property
    def last_error(self) -> str:
        return f"oauth_unavailable: {self.sentence}"


@dataclass(frozen=True)
class Refusal:
    admin: bool
    reason: str
    aadsts: int | None = None

    def exception(self) -> ReauthRequired:
        code = f" (AADSTS{self.aadsts})" if self.aadsts else ""
        if self.admin:
            return ReauthRequired(
                f"the provider refused the app's configuration: {self.reason}{code}. "
                "An admin must fix the app registration; then reconnect the mailbox.",
                admin=True,
            )
        return ReauthRequired(
            f"the provider no longer accepts this connection's sign-in: {self.reason}{code}. "
            "Reconnect the mailbox to fix it."
        )


def classify_refusal(error: str, description: str | None) -> Refusal:
    """Sort a token endpoint's 4xx error into reconnect or admin configuration."""
    m = _AADSTS.search((description or "")[:2048])
    if m:
        number = int(m.group(1))
        if number in ADMIN_AADSTS:
            return Refusal(True, ADMIN_AADSTS[number], number)
        if number in RECONNECT_AADSTS:
            return Refusal(False, RECONNECT_AADSTS[number], number)
    if error in ADMIN_ERRORS:
        return Refusal(True, ADMIN_ERRORS[error])
    if error == "invalid_grant":
        return Refusal(False, "the grant was revoked or has expired")
    return Refusal(False, "the sign-in was refused")

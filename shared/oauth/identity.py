"""Whose mailbox a grant opens: the address the provider vouches for (§10, C7).

From userinfo when the provider has it, else from the ID token, whose signature is checked
against the provider's published keys (joserfc, Authlib's JOSE library) along with audience
(our client ID) and expiry. No issuer check: Microsoft's multi-tenant endpoints sign for every
tenant with the same keys, and a token for our client ID from the provider's keys is the
provider's word either way. An address the provider marks unverified
(``email_verified: false``) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.integrations.base_client import InvalidTokenError
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from shared.mail.addresses import normalize_address
from shared.oauth.client import MAX_RESPONSE_BYTES
from shared.oauth.providers import OAuthProvider


class IdentityError(Exception):
    """The provider did not tell us a usable mailbox address. ``code`` is the API's."""

    def __init__(self, message: str, code: str = "oauth_identity_unavailable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Identity:
    address: str
    subject: str | None


def mailbox_identity(
    client: OAuth2Client, provider: OAuthProvider, token: dict[str, Any]
) -> Identity:
    """The mailbox address of a fresh token response (``client`` carries that token)."""
    if provider.userinfo_url:
        try:
            answer = client.get(provider.userinfo_url)
        except InvalidTokenError:  # Authlib's: the token expired before we could use it
            raise IdentityError("the provider's access token had already expired") from None
        return identity_from_claims(_json(answer), microsoft=False)
    claims = _id_token_claims(client, provider, token.get("id_token"))
    return identity_from_claims(claims, microsoft=provider.name == "microsoft")


def identity_from_claims(claims: dict[str, Any], *, microsoft: bool) -> Identity:
    """The address from ``email`` — refused when the provider marks it unverified. Microsoft's
    ``email`` claim is unverified unless ``xms_edov`` says the domain owner verified it; there
    the tenant's sign-in name (``preferred_username``, the UPN) is the address the tenant
    vouches for. Nowhere else is ``preferred_username`` taken: it may be any string."""
    raw = claims.get("email")
    if microsoft and not _true(claims.get("xms_edov")):
        raw = claims.get("preferred_username")
    elif _false(claims.get("email_verified")):
        raise IdentityError(
            "the provider has not verified this address", code="oauth_address_unverified"
        )
    if not isinstance(raw, str) or "@" not in raw:
        raise IdentityError("the provider did not say which mailbox this is (no email claim)")
    try:
        address = normalize_address(raw)
    except ValueError as exc:
        raise IdentityError("the provider's address is not a valid email address") from exc
    sub = claims.get("sub")
    return Identity(address, sub if isinstance(sub, str) else None)


def _true(value: object) -> bool:
    return value is True or value == "true" or value == 1


def _false(value: object) -> bool:
    return value is False or value == "false" or value == 0


def _id_token_claims(
    client: OAuth2Client, provider: OAuthProvider, id_token: object
) -> dict[str, Any]:
    if not isinstance(id_token, str) or not provider.jwks_url:
        raise IdentityError("the provider sent no ID token (is 'openid' in the scopes?)")
    # withhold_token: the mailbox's access token is for the mailbox, not for the key endpoint.
    jwks = _json(client.request("GET", provider.jwks_url, withhold_token=True))
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        decoded = jwt.decode(id_token, keys, algorithms=["RS256", "ES256", "PS256"])
        jwt.JWTClaimsRegistry(
            leeway=120,
            aud={"essential": True, "value": provider.client_id},
            exp={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise IdentityError("the provider's ID token did not check out") from exc
    claims = dict(decoded.claims)
    tid = claims.get("tid")
    if (
        isinstance(tid, str)
        and claims.get("iss") != f"https://login.microsoftonline.com/{tid}/v2.0"
    ):
        # Microsoft's multi-tenant keys sign for every tenant: the issuer must be the token's
        # own tenant's.
        raise IdentityError("the provider's ID token names another issuer")
    return claims


def _json(response: Any) -> dict[str, Any]:
    if response.status_code != 200 or len(response.content) > MAX_RESPONSE_BYTES:
        raise IdentityError("the provider did not answer who signed in")
    try:
        body = response.json()
    except ValueError as exc:
        raise IdentityError("the provider's answer was not JSON") from exc
    if not isinstance(body, dict):
        raise IdentityError("the provider's answer was not a JSON object")
    return body

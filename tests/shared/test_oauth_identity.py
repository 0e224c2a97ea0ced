"""Whose mailbox a grant opens (§10, C7): the address the provider vouches for, never one it
marks unverified, and never a free-form user name."""

from __future__ import annotations

import pytest

from shared.oauth.identity import IdentityError, identity_from_claims


def test_the_email_claim_is_the_address_unless_marked_unverified() -> None:
    assert identity_from_claims({"email": "Ann@Acme.example"}, microsoft=False).address == (
        "ann@acme.example"
    )
    with pytest.raises(IdentityError) as caught:
        identity_from_claims(
            {"email": "ann@acme.example", "email_verified": False}, microsoft=False
        )
    assert caught.value.code == "oauth_address_unverified"


def test_a_user_name_is_never_taken_for_an_address_outside_microsoft() -> None:
    with pytest.raises(IdentityError):
        identity_from_claims({"preferred_username": "boss@partner.example"}, microsoft=False)


def test_microsoft_takes_the_tenant_sign_in_name_unless_the_email_is_domain_verified() -> None:
    claims = {"email": "someone@else.example", "preferred_username": "ann@contoso.example"}
    assert identity_from_claims(claims, microsoft=True).address == "ann@contoso.example"
    verified = claims | {"xms_edov": True}
    assert identity_from_claims(verified, microsoft=True).address == "someone@else.example"
    with pytest.raises(IdentityError):
        identity_from_claims({"preferred_username": "not-an-address"}, microsoft=True)

"""OAuth providers from the environment, refresh timing and the sorting of provider refusals
(§10) — the rules that need no server. The flows run against a local authorization server and
Dovecot in tests/e2e/test_oauth_connections.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.config import ConfigError
from shared.oauth.errors import classify_refusal
from shared.oauth.providers import providers_from_env
from shared.oauth.tokens import refresh_due

P = "INBOXLOG_OAUTH_"


def test_presets_fill_in_the_real_endpoints_hosts_and_scopes() -> None:
    found = providers_from_env(
        {
            f"{P}GOOGLE_CLIENT_ID": "g-id",
            f"{P}GOOGLE_CLIENT_SECRET": "g-secret",
            f"{P}MICROSOFT_CLIENT_ID": "m-id",
            f"{P}MICROSOFT_CLIENT_SECRET": "m-secret",
        }
    )
    google, microsoft = found["google"], found["microsoft"]
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert "https://mail.google.com/" in google.scopes
    assert (google.imap_host, google.imap_port, google.imap_security) == (
        "imap.gmail.com",
        993,
        "ssl",
    )
    assert google.authorize_params == {"access_type": "offline", "prompt": "consent"}
    assert microsoft.tenant == "common"
    assert microsoft.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert {
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    } <= set(microsoft.scopes)
    assert microsoft.imap_host == "outlook.office365.com"
    assert microsoft.userinfo_url is None and microsoft.jwks_url is not None
    assert "g-secret" not in repr(google)  # secrets stay out of reprs (and so of logs)


def test_a_microsoft_tenant_gets_tenant_specific_urls() -> None:
    microsoft = providers_from_env(
        {
            f"{P}MICROSOFT_CLIENT_ID": "m",
            f"{P}MICROSOFT_CLIENT_SECRET": "s",
            f"{P}MICROSOFT_TENANT": "contoso.onmicrosoft.com",
        }
    )["microsoft"]
    for url in (microsoft.authorize_url, microsoft.token_url, microsoft.jwks_url):
        assert url is not None and "/contoso.onmicrosoft.com/" in url


def test_a_generic_provider_needs_every_url_and_host() -> None:
    env = {
        f"{P}ACME_CLIENT_ID": "a",
        f"{P}ACME_CLIENT_SECRET": "s",
        f"{P}ACME_AUTHORIZE_URL": "https://id.acme.example/authorize",
        f"{P}ACME_TOKEN_URL": "https://id.acme.example/token",
        f"{P}ACME_USERINFO_URL": "https://id.acme.example/userinfo",
        f"{P}ACME_SCOPES": "openid email mail",
        f"{P}ACME_IMAP_HOST": "imap.acme.example",
        f"{P}ACME_SMTP_HOST": "smtp.acme.example",
        f"{P}ACME_SASL": "oauthbearer",
    }
    acme = providers_from_env(env)["acme"]
    assert acme.scopes == ("openid", "email", "mail") and acme.sasl == "oauthbearer"
    assert (acme.imap_port, acme.smtp_port) == (993, 587)
    for missing in (f"{P}ACME_TOKEN_URL", f"{P}ACME_IMAP_HOST", f"{P}ACME_USERINFO_URL"):
        with pytest.raises(ConfigError, match=missing.removesuffix("_URL")):
            providers_from_env({k: v for k, v in env.items() if k != missing})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TOKEN_URL", "http://id.acme.example/token"),  # secrets in clear over the internet
        ("TOKEN_URL", "ftp://127.0.0.1/token"),
        ("SASL", "plain"),
        ("IMAP_SECURITY", "tls"),
        ("IMAP_PORT", "99999"),
    ],
)
def test_unsafe_or_wrong_provider_settings_stop_the_start(key: str, value: str) -> None:
    env = {
        f"{P}GOOGLE_CLIENT_ID": "g",
        f"{P}GOOGLE_CLIENT_SECRET": "s",
        f"{P}GOOGLE_{key}": value,
    }
    with pytest.raises(ConfigError, match=f"{P}GOOGLE_{key}"):
        providers_from_env(env)


def test_plain_http_is_allowed_on_loopback_only() -> None:
    env = {
        f"{P}GOOGLE_CLIENT_ID": "g",
        f"{P}GOOGLE_CLIENT_SECRET": "s",
        f"{P}GOOGLE_TOKEN_URL": "http://127.0.0.1:8999/token",
    }
    assert providers_from_env(env)["google"].token_url == "http://127.0.0.1:8999/token"


def test_refresh_comes_a_leeway_early_or_at_half_life_for_short_tokens() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert refresh_due(t0, t0 + timedelta(seconds=3600)) == t0 + timedelta(seconds=3540)
    assert refresh_due(t0, t0 + timedelta(seconds=120)) == t0 + timedelta(seconds=60)
    assert refresh_due(t0, t0 + timedelta(seconds=90)) == t0 + timedelta(seconds=45)


@pytest.mark.parametrize(
    ("error", "description", "admin", "quoted"),
    [
        ("invalid_grant", "AADSTS50173: The grant has expired (revoked)", False, "AADSTS50173"),
        ("invalid_grant", "AADSTS700082: The refresh token has expired", False, "AADSTS700082"),
        ("invalid_client", "AADSTS7000215: Invalid client secret.", True, "AADSTS7000215"),
        ("unauthorized_client", "AADSTS700016: App 'x' not found in 'y'.", True, "AADSTS700016"),
        ("invalid_grant", "AADSTS65001: The user or admin has not consented", True, "AADSTS65001"),
        ("invalid_grant", "Token has been expired or revoked.", False, None),
        ("invalid_client", "Unauthorized", True, None),
        ("invalid_grant", "AADSTS99999999: something new", False, None),
    ],
)  # fmt: skip
def test_provider_refusals_are_sorted_into_reconnect_and_admin_configuration(
    error: str, description: str, admin: bool, quoted: str | None
) -> None:
    refusal = classify_refusal(error, description)
    assert refusal.admin is admin
    sentence = refusal.exception().last_error
    assert sentence.startswith("reauth_required: ")
    assert ("An admin must" in sentence) is admin
    assert "Reconnect" in sentence or "reconnect" in sentence
    if quoted:
        assert quoted in sentence
    assert description not in sentence  # our words, never the provider's text

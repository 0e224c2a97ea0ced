"""OAuth providers from the environment (§10): Google and Microsoft presets, any OpenID provider.

``INBOXLOG_OAUTH_<NAME>_CLIENT_ID`` names a provider; its other ``INBOXLOG_OAUTH_<NAME>_…``
variables override the preset (GOOGLE, MICROSOFT) or, for any other name, must give every URL
and host. Tests point a preset at a local authorization server the same way an operator would.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.config import ConfigError

PREFIX = "INBOXLOG_OAUTH_"
SASL_MECHANISMS = ("xoauth2", "oauthbearer")
SECURITY_MODES = ("ssl", "starttls", "none")

# What each preset fills in; "{tenant}" is replaced by the provider's tenant (Microsoft).
_PRESETS: dict[str, dict[str, str]] = {
    "GOOGLE": {
        "AUTHORIZE_URL": "https://accounts.google.com/o/oauth2/v2/auth",
        "TOKEN_URL": "https://oauth2.googleapis.com/token",
        "USERINFO_URL": "https://openidconnect.googleapis.com/v1/userinfo",
        "JWKS_URL": "",
        "SCOPES": "openid email https://mail.google.com/",
        "IMAP_HOST": "imap.gmail.com",
        "IMAP_PORT": "993",
        "IMAP_SECURITY": "ssl",
        "SMTP_HOST": "smtp.gmail.com",
        "SMTP_PORT": "587",
        "SMTP_SECURITY": "starttls",
    },
    "MICROSOFT": {
        "AUTHORIZE_URL": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        "TOKEN_URL": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        # Outlook's access token is for outlook.office.com, not Graph: the mailbox address
        # comes from the ID token, checked against the tenant's signing keys.
        "USERINFO_URL": "",
        "JWKS_URL": "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys",
        "SCOPES": "openid email offline_access "
        "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send",
        "IMAP_HOST": "outlook.office365.com",
        "IMAP_PORT": "993",
        "IMAP_SECURITY": "ssl",
        "SMTP_HOST": "smtp.office365.com",
        "SMTP_PORT": "587",
        "SMTP_SECURITY": "starttls",
    },
}
# Google hands out a refresh token only for offline access, and again on a reconnect only
# when asked to show the consent screen.
_AUTHORIZE_PARAMS = {
    "GOOGLE": {"access_type": "offline", "prompt": "consent"},
    # Never a silent sign-in with whatever account the browser holds: the person picks it.
    "MICROSOFT": {"prompt": "select_account"},
}
_REQUIRED = (
    "CLIENT_SECRET",
    "AUTHORIZE_URL",
    "TOKEN_URL",
    "SCOPES",
    "IMAP_HOST",
    "SMTP_HOST",
)


@dataclass(frozen=True)
class OAuthProvider:
    name: str  # the API name: <NAME> in lower case
    client_id: str
    client_secret: str = field(repr=False)
    authorize_url: str
    token_url: str
    userinfo_url: str | None
    jwks_url: str | None
    scopes: tuple[str, ...]
    imap_host: str
    imap_port: int
    imap_security: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    sasl: str = "xoauth2"
    tenant: str | None = None
    authorize_params: Mapping[str, str] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)


def providers_from_env(env: Mapping[str, str]) -> dict[str, OAuthProvider]:
    """Every provider configured in ``env`` by its API name; a ConfigError names what is wrong."""
    names = sorted(
        key[len(PREFIX) : -len("_CLIENT_ID")]
        for key, value in env.items()
        if key.startswith(PREFIX) and key.endswith("_CLIENT_ID") and value
    )
    return {name.lower(): _provider(name, env) for name in names if name}


def _provider(name: str, env: Mapping[str, str]) -> OAuthProvider:
    def var(key: str) -> str:
        return env.get(f"{PREFIX}{name}_{key}", "").strip()

    tenant = (var("TENANT") or "common") if name == "MICROSOFT" else None
    preset = {k: v.replace("{tenant}", tenant or "") for k, v in _PRESETS.get(name, {}).items()}

    def value(key: str) -> str:
        return var(key) or preset.get(key, "")

    missing = [f"{PREFIX}{name}_{k}" for k in _REQUIRED if not value(k)]
    if not value("USERINFO_URL") and not value("JWKS_URL"):
        missing.append(f"{PREFIX}{name}_USERINFO_URL (or …_JWKS_URL for ID tokens)")
    if missing:
        raise ConfigError(f"OAuth provider {name}: missing {', '.join(missing)}")
    sasl = (value("SASL") or "xoauth2").lower()
    if sasl not in SASL_MECHANISMS:
        raise ConfigError(f"{PREFIX}{name}_SASL must be xoauth2 or oauthbearer")
    urls = {k: value(k) for k in ("AUTHORIZE_URL", "TOKEN_URL", "USERINFO_URL", "JWKS_URL")}
    for key, url in urls.items():
        if url:
            _check_url(f"{PREFIX}{name}_{key}", url)
    return OAuthProvider(
        name=name.lower(),
        client_id=var("CLIENT_ID"),
        client_secret=value("CLIENT_SECRET"),
        authorize_url=urls["AUTHORIZE_URL"],
        token_url=urls["TOKEN_URL"],
        userinfo_url=urls["USERINFO_URL"] or None,
        jwks_url=urls["JWKS_URL"] or None,
        scopes=tuple(value("SCOPES").split()),
        imap_host=value("IMAP_HOST"),
        imap_port=_port(name, "IMAP", value("IMAP_PORT"), value("IMAP_SECURITY") or "ssl"),
        imap_security=_security(name, "IMAP", value("IMAP_SECURITY") or "ssl"),
        smtp_host=value("SMTP_HOST"),
        smtp_port=_port(name, "SMTP", value("SMTP_PORT"), value("SMTP_SECURITY") or "starttls"),
        smtp_security=_security(name, "SMTP", value("SMTP_SECURITY") or "starttls"),
        sasl=sasl,
        tenant=tenant,
        authorize_params=_AUTHORIZE_PARAMS.get(name, {}),
    )


def _security(name: str, kind: str, security: str) -> str:
    if security not in SECURITY_MODES:
        raise ConfigError(f"{PREFIX}{name}_{kind}_SECURITY must be ssl, starttls or none")
    return security


def _port(name: str, kind: str, port: str, security: str) -> int:
    if not port:
        defaults = {"IMAP": {"ssl": 993}, "SMTP": {"ssl": 465, "starttls": 587}}
        return defaults[kind].get(security, 143 if kind == "IMAP" else 25)
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ConfigError(f"{PREFIX}{name}_{kind}_PORT must be a port number")
    return number


def _check_url(variable: str, url: str) -> None:
    """HTTPS only — client secrets and tokens travel here — except on this machine's loopback
    (a local authorization server in tests, a developer's machine)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and _is_loopback(parts.hostname or ""):
        return
    raise ConfigError(f"{variable} must be an https:// URL (http only on loopback)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

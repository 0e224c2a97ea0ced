"""The one typed settings object, built in entry points from the environment and ``.env``.

Embedded mode (the SQLite default) needs nothing installed: the Fernet key for secrets at rest is
generated once into a 0600 file in the working directory and reused.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet
from pydantic import Field, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from shared.oauth.providers import OAuthProvider

SECRET_KEY_FILE = ".inboxlog-secret-key"
ADMIN_TOKEN_FILE = ".inboxlog-admin-token"


class ConfigError(RuntimeError):
    """The configuration cannot be used as given (raised at start-up, before any work)."""


class Settings(BaseSettings):
    """Every knob of §7, each with its documented default."""

    model_config = SettingsConfigDict(
        env_prefix="INBOXLOG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where everything durable lives; SQLite is the embedded default, PostgreSQL in production.
    database_url: str = "sqlite:///./inboxlog.db"
    # Celery broker; empty means the embedded broker (a SQLite file next to the database).
    broker_url: str = ""
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    http_host: str = "127.0.0.1"
    http_port: int = 8025
    # Domain of the per-account intake addresses (bcc_address, forward_address).
    logging_domain: str = "log.localhost"
    # Operator token for /v1/accounts and ops; `inboxlog run` generates one into a file when unset.
    admin_token: str = ""
    # Fernet key for IMAP passwords at rest; required on PostgreSQL.
    secret_key: str = ""
    max_message_bytes: int = 26_214_400
    smtp_max_recipients: int = 100
    smtp_rate_per_minute: int = 600
    # Messages per minute per account across all clients.
    smtp_account_rate_per_minute: int = 6000
    # Simultaneous SMTP connections per client address.
    smtp_max_connections_per_client: int = 50
    poll_seconds: int = 60
    # Extra CA bundle for verifying IMAP servers' certificates (private CAs).
    imap_ca_file: str = ""
    # How long a poller's claim on a connection lasts without renewal (takeover bound).
    poller_lease_seconds: float = 30.0
    # Mailboxes one poller process holds at most (§8: ≥ 1,000); the rest wait for another.
    poller_max_connections: int = 1000
    # With IDLE on INBOX: how often the other folders (\Sent) get a STATUS, and mail the
    # server did not announce during IDLE is looked for (one DONE/STATUS/IDLE round).
    imap_recheck_seconds: float = 3.0
    # Messages per IMAP FETCH; each batch is stored and its cursor advanced in one transaction.
    imap_fetch_batch: int = 200
    # Bytes per IMAP FETCH (by RFC822.SIZE): a batch of large messages stays within memory.
    imap_fetch_bytes: int = 67_108_864
    # CIDRs where user-named servers (IMAP, SMTP, OAuth endpoints) may live; everything private,
    # loopback, link-local, CGNAT, multicast or cloud-metadata is refused unless listed (§6).
    allowed_private_networks: str = ""
    sweep_after_seconds: int = 60
    # PEM certificate and key enabling STARTTLS on the SMTP gateway.
    smtp_tls_cert: str = ""
    smtp_tls_key: str = ""
    # The SMTP submission listener's port (§9); unset: no listener. Needs the TLS certificate.
    submission_port: int | None = None
    submission_tls_port: int | None = None  # the same listener on implicit TLS (465 style)
    # Drop SMTP clients idle for this long.
    smtp_idle_timeout: float = 60.0
    # Behind a TCP load balancer: read the client address from the PROXY protocol header (v1/v2)
    # of connections from these CIDRs (comma-separated); connections from elsewhere are refused.
    smtp_proxy_protocol: bool = False
    smtp_trusted_proxies: str = ""
    # Seconds a pipeline task may run (hard limit); the soft limit comes a little earlier.
    task_time_limit: float = 120.0
    # Days the raw bytes of mail that was not logged are kept (decisions keep their codes).
    raw_retention_days: float = 30.0
    # Serve /metrics without the operator token.
    metrics_public: bool = False
    # The base URL people's browsers and mail clients reach the API at.
    public_url: str = "http://127.0.0.1:8025"
    # Hours a temporarily refused outbound message is retried before it is failed (§9).
    outbound_retry_hours: float = 24.0
    # The first retry of a temporarily refused message (§9: within 60 s); later ones double.
    outbound_first_retry_seconds: float = 30.0
    # save_sent=auto: how long after sending to look for the provider's copy in \\Sent (§9).
    outbound_sent_check_seconds: float = 120.0
    # CIDRs of reverse proxies whose X-Forwarded-For the HTTP API believes.
    trusted_proxies: str = ""
    # "json" for one JSON object per log line, else plain text.
    log_format: str = "text"
    log_level: str = "INFO"
    # Working directory for generated files (secret key, admin token, embedded broker).
    data_dir: Path = Field(default_factory=lambda: Path.cwd())
    # OAuth providers (§10) come from INBOXLOG_OAUTH_<NAME>_… variables, whose names are not
    # fields; read once from the environment and .env (see oauth_providers).
    _oauth: dict[str, OAuthProvider] | None = PrivateAttr(default=None)

    def oauth_providers(self) -> dict[str, OAuthProvider]:
        """The configured OAuth providers by API name; ConfigError when one is incomplete."""
        if self._oauth is None:
            from dotenv import dotenv_values

            from shared.oauth.providers import providers_from_env

            env = {k: v for k, v in dotenv_values(".env").items() if v is not None}
            env.update(os.environ)
            self._oauth = providers_from_env(env)
        return self._oauth

    @property
    def soft_time_limit(self) -> float:
        """When a task is asked to stop: a little before the hard limit kills it."""
        return max(1.0, self.task_time_limit - max(1.0, min(10.0, self.task_time_limit / 10)))

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_broker_url(self) -> str:
        """The broker to use: the configured one, or the embedded SQLite-backed broker."""
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.data_dir / 'inboxlog-broker.db').resolve()}"


def _read_or_create_secret_file(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, then resolve the embedded-mode secret key."""
    # Any: pydantic validates (and coerces) each override like the environment's strings.
    settings = Settings(**overrides)
    if not settings.secret_key:
        if not settings.is_embedded:
            raise ConfigError(
                "INBOXLOG_SECRET_KEY is required with a non-embedded database "
                "(generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            )
        settings.secret_key = _read_or_create_secret_file(
            settings.data_dir / SECRET_KEY_FILE, lambda: Fernet.generate_key().decode()
        )
    try:
        Fernet(settings.secret_key.encode())
    except ValueError as exc:
        raise ConfigError("INBOXLOG_SECRET_KEY is not a valid Fernet key") from exc
    settings.oauth_providers()  # a misconfigured provider stops every command at start
    return settings


def ensure_admin_token(settings: Settings) -> tuple[str, bool]:
    """Return the operator token, generating it into a 0600 file when unset.

    The boolean says whether the token came from the file (and so should be printed once).
    """
    if settings.admin_token:
        return settings.admin_token, False
    token = _read_or_create_secret_file(
        settings.data_dir / ADMIN_TOKEN_FILE, lambda: "ilop_" + secrets.token_urlsafe(32)
    )
    settings.admin_token = token
    return token, True

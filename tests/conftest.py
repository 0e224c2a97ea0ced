"""Shared fixtures: fresh databases on both backends, an API client, account factories."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.api.context import ApiContext
from shared.config import Settings
from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory
from tests.support.brokers import rabbitmq_vhost
from tests.support.databases import fresh_postgres, fresh_sqlite
from tests.support.stack import redis_broker_url

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "public"
OPERATOR_TOKEN = "ilop_test-operator-token"


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_sqlite(tmp_path_factory.mktemp("sqlite")) as url:
        yield url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Every test using this runs on both backends."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test session's own, deleted at the end. An unreachable
    RabbitMQ is an error, never a skip."""
    with rabbitmq_vhost() as url:
        yield url


BROKERS = ["redis", "rabbitmq"]


def broker_url_for(request: pytest.FixtureRequest, kind: str) -> str:
    """A fresh Redis db, or the session's RabbitMQ vhost."""
    return redis_broker_url() if kind == "redis" else request.getfixturevalue("rabbitmq_url")


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> str:
    """Every test using this runs on both brokers."""
    return broker_url_for(request, request.param)


def make_settings(db_url: str, tmp_path: Path, **over: Any) -> Settings:
    return Settings(
        database_url=db_url,
        admin_token=OPERATOR_TOKEN,
        secret_key=Fernet.generate_key().decode(),
        data_dir=tmp_path,
        **over,
    )


@dataclass
class Api:
    """A TestClient with helpers that assert the expected status and return JSON."""

    client: TestClient
    ctx: ApiContext
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, token: str | None, expect: int, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        resp = self.client.request(method, path, headers=headers, **kw)
        assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def new_account(self, name: str = "Acme", admin_email: str = "admin@acme.example") -> dict:
        return self.call(
            "POST",
            "/v1/accounts",
            OPERATOR_TOKEN,
            201,
            json={"name": name, "admin_email": admin_email},
        )

    def new_user(self, admin_token: str, email: str, role: str = "member") -> dict:
        return self.call("POST", "/v1/users", admin_token, 201, json={"email": email, "role": role})


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(db_url, tmp_path)
    engine = make_engine(db_url)
    ctx = ApiContext(
        settings=settings, sessions=make_session_factory(engine), box=SecretBox(settings.secret_key)
    )
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        yield Api(client, ctx)
    engine.dispose()


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog

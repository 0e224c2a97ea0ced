"""A create is committed — readable by any other connection — before its answer leaves.

Found as a flake: once in about a dozen account creations, the token ``POST /v1/accounts``
returned got 401 on the very next request. A yield dependency's exit code (our commit) ran
after the response was sent. Here the commit is made slow on purpose, so the old order shows
every time instead of once in a dozen.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from gateway.api.app import create_app
from gateway.api.context import ApiContext
from shared.crypto import SecretBox, hash_token
from shared.db.engine import make_engine, make_session_factory
from tests.conftest import OPERATOR_TOKEN, Api, make_settings
from tests.gateway.api.live import serve

SLOW_COMMIT_SECONDS = 1.0


def _token_committed(reader: sa.Engine, token: str) -> bool:
    """Seen by a separate connection (no write lock, only what was committed)."""
    with reader.connect() as conn:
        n = conn.execute(
            sa.text("SELECT count(*) FROM api_tokens WHERE token_hash = :h"),
            {"h": hash_token(token)},
        ).scalar()
    return bool(n)


def test_every_create_is_committed_before_it_is_answered(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    engine = make_engine(db_url)
    slow = threading.Event()

    @sa.event.listens_for(engine, "commit")
    def _slow_commit(_conn: Any) -> None:  # runs just before the DBAPI commit
        if slow.is_set():
            time.sleep(SLOW_COMMIT_SECONDS)

    ctx = ApiContext(
        settings=settings, sessions=make_session_factory(engine), box=SecretBox(settings.secret_key)
    )
    reader = sa.create_engine(db_url)  # plain: no BEGIN IMMEDIATE, reads the last commit
    op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    try:
        with serve(create_app(ctx)) as base, httpx.Client(base_url=base, timeout=60) as http:
            slow.set()
            for i in range(3):
                r = http.post(
                    "/v1/accounts",
                    headers=op,
                    json={"name": f"Race {i}", "admin_email": f"boss{i}@race.example"},
                )
                assert r.status_code == 201, r.text
                token = r.json()["token"]
                assert _token_committed(reader, token), "answered before the commit"
                me = http.get("/v1/account", headers={"Authorization": f"Bearer {token}"})
                assert me.status_code == 200, me.text
                # Every other write route shares the dependency: a user made by the new admin.
                r = http.post(
                    "/v1/users",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"email": f"rep{i}@race.example"},
                )
                assert r.status_code == 201, r.text
                assert _token_committed(reader, r.json()["token"]), "answered before the commit"
    finally:
        reader.dispose()
        engine.dispose()


def test_a_commit_that_fails_is_never_answered_as_a_success(api: Api) -> None:
    engine = api.ctx.sessions.kw["bind"]

    def refuse(_conn: Any) -> None:
        raise RuntimeError("the database refused the commit")

    sa.event.listen(engine, "commit", refuse)
    try:
        r = api.client.post(
            "/v1/accounts",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            json={"name": "Never", "admin_email": "boss@never-committed.example"},
        )
    finally:
        sa.event.remove(engine, "commit", refuse)
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "internal_error"
    with api.ctx.sessions() as s:
        found = s.execute(
            sa.text("SELECT count(*) FROM users WHERE email = 'boss@never-committed.example'")
        ).scalar()
    assert found == 0

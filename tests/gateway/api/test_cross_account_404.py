"""Another account's objects answer 404 (§7) — on every route that takes an id, found by walking
the application's routes, not by a hand-kept list.

Account A gets one real object of each kind (user, inbox, team and personal connections,
contact, company, logged email with an attachment, conversation, failure, outbox entry). Every
method of every route with a path parameter is called with account B's admin token and a valid
body: each must answer 404 with the error envelope. A positive control replays the same requests
with A's admin token and must *not* get 404/422 — so the ids are real and the bodies valid, and
a 404 above is the account boundary, not a typo. A new route whose path parameter has no fixture
id, or whose body has no plausible example, fails the test instead of being skipped.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from shared.db.engine import transaction
from shared.db.models import Failure, Outbox, StoredMessage
from tests.conftest import Api
from tests.gateway.api.test_team_conversations import feed, team
from tests.support.pipeline import ingest

PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")

# Path parameters that are not object ids, with the value to use.
NON_ID_PARAMS: dict[str, Any] = {"index": 0}

# A valid body for every (method, path) that takes one. Chosen to be harmless when the
# positive control (account A's admin) actually applies them.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/users/{user_id}"): {"name": "Renamed"},
    ("PUT", "/v1/users/{user_id}/defaults"): {"log": True, "track": True, "never_log": []},
    ("PATCH", "/v1/inboxes/{inbox_id}"): {"name": "Support"},
    ("PUT", "/v1/inboxes/{inbox_id}/rules"): {"items": []},
    ("POST", "/v1/inboxes/{inbox_id}/rules/test"): {
        "raw": "From: ken@acme.example\r\nTo: support@ours.example\r\nSubject: hi\r\n\r\nbody\r\n"
    },
    ("PATCH", "/v1/connections/{connection_id}"): {"meetings": False},
    ("POST", "/v1/connections/{connection_id}/sync"): {},
    ("PATCH", "/v1/emails/{email_id}"): {"visibility": "account"},
    ("PATCH", "/v1/conversations/{conversation_id}"): {"status": "open"},
    ("POST", "/v1/ops/failures/{failure_id}/retry"): {},
    ("PATCH", "/v1/contacts/{contact_id}"): {"tracking_opt_out": False},
    ("POST", "/v1/conversations/{conversation_id}/reply"): {"text": "Thanks"},
}

# Routes anyone may call with an opaque token (§9 tracking): no account to cross; their 404
# for an unknown token is tested in tests/e2e/test_outbound_send.py.
PUBLIC_PREFIXES = ("/t/",)


def walk_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str, APIRoute]]:
    """(method, path, route) for every API route, through included routers at any depth."""
    for route in routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                yield method, prefix + route.path, route
        elif hasattr(route, "original_router"):  # FastAPI's included-router node
            ctx = getattr(route, "include_context", None)
            sub = prefix + (getattr(ctx, "prefix", "") or "")
            yield from walk_routes(route.original_router.routes, sub)
        elif hasattr(route, "routes") and hasattr(route, "path"):  # Mount
            yield from walk_routes(route.routes, prefix + route.path)


def id_routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    found = {
        (m, p): r
        for m, p, r in walk_routes(app.routes)
        if PARAM.search(p) and not p.startswith(PUBLIC_PREFIXES)
    }
    return [(m, p, found[m, p]) for m, p in sorted(found, key=lambda k: (k[1], k[0]))]


def body_required(route: APIRoute) -> bool:
    return route.body_field is not None


def mail(sender: str, to: str, subject: str, with_attachment: bool = False) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m["Date"] = "Tue, 04 Mar 2025 05:06:07 +0000"
    m.set_content("hello")
    if with_attachment:
        m.add_attachment(b"%PDF-1.4 x", maintype="application", subtype="pdf", filename="q.pdf")
    return m.as_bytes()


def world_a(api: Api) -> dict[str, list[int]]:
    """Account A with one real object of every kind, by path parameter name."""
    t = team(api)
    admin, acc_id = t["admin"], t["account_id"]
    bob = t["bob"]
    personal = api.call(
        "POST",
        "/v1/connections",
        bob["token"],
        201,
        json={"address": "bob.private@ours.example", "kind": "personal"},
    )
    bcc = ingest(
        api.ctx.sessions,
        acc_id,
        "bcc",
        mail("bob@ours.example", "Ken <ken@acme.co.jp>", "Quote", with_attachment=True),
    )
    assert bcc.outcome == "logged" and bcc.email_id
    conv_job = feed(api, t, mail("Ken <ken@acme.co.jp>", "support@ours.example", "Help"))
    assert conv_job.outcome == "logged"
    [conv] = api.call("GET", f"/v1/inboxes/{t['inbox']['id']}/conversations", admin, 200)["items"]
    [contact] = api.call("GET", "/v1/contacts?email=ken@acme.co.jp", admin, 200)["items"]
    assert contact["company_id"]
    with transaction(api.ctx.sessions) as s:
        stored = StoredMessage(account_id=acc_id, source="bcc", raw=b"x", status="failed")
        s.add(stored)
        s.flush()
        failure = Failure(account_id=acc_id, stored_message_id=stored.id, stage="parse", error="x")
        s.add(failure)
        s.flush()
        failure_id = failure.id
        outbox = Outbox(
            account_id=acc_id, sender_id=bob["user"]["id"], message_id="o1@ours.example",
            mail_from="bob@ours.example", raw=b"x", recipients=[],
        )  # fmt: skip
        s.add(outbox)
        s.flush()
        outbox_id = outbox.id
    return {
        "user_id": [bob["user"]["id"]],
        "inbox_id": [t["inbox"]["id"]],
        "connection_id": [t["conn"]["id"], personal["id"]],
        "contact_id": [contact["id"]],
        "company_id": [contact["company_id"]],
        "email_id": [bcc.email_id],
        "conversation_id": [conv["id"]],
        "failure_id": [failure_id],
        "outbox_id": [outbox_id],
        "_admin": admin,  # type: ignore[dict-item]
    }


def concrete(path: str, ids: dict[str, Any]) -> Iterator[str]:
    """Every filling of ``path``'s parameters with A's ids (all combinations)."""
    names = PARAM.findall(path)
    choices = [ids[n] if n in ids else [NON_ID_PARAMS[n]] for n in names]
    for combo in itertools.product(*choices):
        values = dict(zip(names, combo, strict=True))
        yield PARAM.sub(lambda m, v=values: str(v[m.group(1)]), path)  # type: ignore[misc]


def call(api: Api, method: str, url: str, token: str, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    kw: dict[str, Any] = {"json": body} if body is not None else {}
    return api.client.request(method, url, headers=headers, **kw)


def check_coverage(app: FastAPI, ids: dict[str, Any]) -> list[tuple[str, str, APIRoute]]:
    routes = id_routes(app)
    schema_paths = {
        p for p in app.openapi()["paths"] if PARAM.search(p) and not p.startswith(PUBLIC_PREFIXES)
    }
    walked = {p for _, p, _ in routes}
    assert schema_paths <= walked, f"route walk missed {schema_paths - walked}"
    missing_ids = sorted(
        {
            f"{m} {p}: {{{n}}}"
            for m, p, _ in routes
            for n in PARAM.findall(p)
            if n not in ids and n not in NON_ID_PARAMS
        }
    )
    assert not missing_ids, f"no fixture id for these path parameters: {missing_ids}"
    missing_bodies = sorted(
        f"{m} {p}" for m, p, r in routes if body_required(r) and (m, p) not in BODIES
    )
    assert not missing_bodies, f"no plausible body for: {missing_bodies}"
    return routes


def test_every_id_route_answers_404_to_another_account(api: Api) -> None:
    ids = world_a(api)
    admin_a = ids.pop("_admin")
    admin_b = api.new_account("Other", "eve@other.example")["token"]
    app = api.client.app
    assert isinstance(app, FastAPI)
    routes = check_coverage(app, ids)
    assert len(routes) >= 20  # sanity: the walk found the API, not an empty router

    checked: list[str] = []
    for method, path, _ in routes:
        body = BODIES.get((method, path))
        for url in concrete(path, ids):
            resp = call(api, method, url, admin_b, body)
            assert resp.status_code == 404, (method, url, resp.status_code, resp.text)
            err = resp.json()["error"]
            assert err["code"] and isinstance(err["message"], str), (method, url, resp.text)
            checked.append(f"{method} {url}")

    # Positive control: the same requests from A's admin find the objects (DELETE last).
    ordered = sorted(routes, key=lambda r: r[0] == "DELETE")
    for method, path, _ in ordered:
        body = BODIES.get((method, path))
        for url in concrete(path, ids):
            resp = call(api, method, url, admin_a, body)
            code = resp.json()["error"]["code"] if resp.status_code >= 400 else None
            # Found, and the body passed validation (a domain refusal such as 403 or
            # ``no_imap`` is fine: it was reached only after the object was found).
            ok = resp.status_code < 500 and resp.status_code not in (404, 405)
            assert ok and code != "validation_error", (method, url, resp.status_code, resp.text)
    assert len(checked) >= len(routes)


def test_route_walk_refuses_unknown_id_parameters(api: Api) -> None:
    """The coverage check itself: a route with an id nobody provides makes it fail."""
    app = FastAPI()
    app.include_router(api.client.app.router)  # type: ignore[attr-defined]

    @app.get("/v1/widgets/{widget_id}")
    def _widget(widget_id: int) -> dict:  # pragma: no cover - never called
        return {}

    try:
        check_coverage(app, {"user_id": [1]})
    except AssertionError as exc:
        assert "widget_id" in str(exc)
    else:
        raise AssertionError("an id route without a fixture id was silently accepted")

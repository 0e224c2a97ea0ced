"""Property-based fuzzing of the whole OpenAPI schema (schemathesis): no input makes a 5xx.

The app is built like the ``api`` fixture (both databases), seeded with a real account holding one
object of every kind, and every operation is driven with schema-shaped random requests under a
real admin token. Bounded: a fixed number of examples per operation, no deadline.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.conftest import Api
from tests.gateway.api.test_cross_account_404 import world_a

MAX_EXAMPLES = 25


def test_no_operation_answers_5xx(api: Api) -> None:
    ids = world_a(api)
    admin = ids["_admin"]
    headers = {"Authorization": f"Bearer {admin}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30, "the schema lost its operations"
    failures: list[str] = []
    for op in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(), data=st.data())
        def run(case, data) -> None:  # type: ignore[no-untyped-def]
            case.headers = {**(case.headers or {}), **headers}
            case.call_and_validate(checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
def test_schema_and_health_need_no_token(api: Api, path: str) -> None:
    assert api.client.get(path).status_code == 200


# Found by the fuzz above: ids beyond the database's integer range reached the driver and
# answered 500 (OverflowError on SQLite, "integer out of range" on PostgreSQL).
HUGE = 2**63 + 1


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", f"/v1/users/{HUGE}", None),
        ("GET", f"/v1/emails/{2**31}", None),
        ("GET", f"/v1/emails/{HUGE}/attachments/0", None),
        ("DELETE", f"/v1/connections/{HUGE}", None),
        ("PATCH", f"/v1/conversations/{HUGE}", {"status": "open"}),
        ("GET", f"/v1/users?offset={HUGE}", None),
        ("GET", f"/v1/inboxes/1/conversations?assignee_id={HUGE}", None),
        ("POST", "/v1/inboxes", {"name": "X", "member_ids": [HUGE]}),
        ("POST", "/v1/contacts", {"email": "a@b.example", "owner_id": HUGE}),
        ("GET", "/v1/users/0", None),
    ],
)
def test_out_of_range_ids_are_422_not_500(api: Api, method: str, url: str, body: object) -> None:
    admin = api.new_account()["token"]
    kw = {"json": body} if body is not None else {}
    err = api.call(method, url, admin, 422, **kw)["error"]
    assert err["code"] == "validation_error"


# Found while probing what the fuzz could not reach: NUL (PostgreSQL text refuses it) and lone
# surrogates (valid JSON escapes that no driver can encode) reached the database and answered
# 500 — a contact's name, a connection's address, list filters, account settings.
@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/v1/contacts", b'{"email": "x@b.example", "name": "a\\u0000b"}'),
        ("POST", "/v1/connections", b'{"address": "q\\u0000@b.example", "kind": "personal"}'),
        ("PATCH", "/v1/account/settings", b'{"internal_domains": ["\\ud800.example"]}'),
        ("PUT", "/v1/users/1/defaults", b'{"log": true, "track": true, "never_log": ["\\udfff"]}'),
        ("GET", "/v1/contacts?email=%00", None),
        ("GET", "/v1/companies?domain=a%00b", None),
    ],
)
def test_nul_and_lone_surrogates_are_422_not_500(
    api: Api, method: str, url: str, body: bytes | None
) -> None:
    admin = api.new_account()["token"]
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    resp = api.client.request(method, url, headers=headers, content=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "validation_error"


def test_rule_user_ids_beyond_the_database_are_422(api: Api) -> None:
    admin = api.new_account()["token"]
    inbox = api.call("POST", "/v1/inboxes", admin, 201, json={"name": "S", "member_ids": []})
    for action in (
        {"type": "assign_user", "user_id": HUGE},
        {"type": "round_robin", "user_ids": [2**40]},
    ):
        rule = {"name": "r", "conditions": {}, "action": action}
        err = api.call(
            "PUT", f"/v1/inboxes/{inbox['id']}/rules", admin, 422, json={"items": [rule]}
        )
        assert err["error"]["code"] == "validation_error"

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
from tests.gateway.http.test_cross_account_404 import world_a

MAX_EXAMPLES = 30


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

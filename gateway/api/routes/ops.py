"""Operations: status, throughput, failures and retry (operator or admin), /metrics, the ops page.

The operator sees every account; an admin sees their own account's rows. Queue depths are the
broker's, shared by all accounts; the gateway's reply counts are the operator's alone.
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.api.context import ApiContext
from gateway.api.deps import (
    ContextDep,
    DbId,
    ListPageDep,
    PrincipalDep,
    SessionDep,
    Unauthorized,
    bearer,
    is_operator_token,
)
from shared.errors import Forbidden
from shared.metrics import OpsCollector, QueueProbe
from shared.principal import Principal
from shared.services import failures as failure_records
from shared.services import ops

router = APIRouter(tags=["ops"])

# The page's own script only; it talks to this origin alone (no CDN: it must work offline).
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
)


def scope(p: Principal) -> int | None:
    """None (all accounts) for the operator, the admin's account for an admin."""
    if p.is_operator:
        return None
    if p.is_admin:
        return p.account_id
    raise Forbidden("ops needs the operator token or an admin", code="admin_required")


def queue_probe(ctx: ApiContext) -> QueueProbe:
    probe: QueueProbe | None = ctx.extras.get("queue_probe")
    if probe is None:
        probe = ctx.extras.setdefault("queue_probe", QueueProbe(ctx.settings.effective_broker_url))
    return probe


def _registry(ctx: ApiContext) -> CollectorRegistry:
    registry: CollectorRegistry | None = ctx.extras.get("metrics_registry")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(OpsCollector(ctx.sessions, queue_probe(ctx).depths))
        registry = ctx.extras.setdefault("metrics_registry", registry)
    return registry


@router.get("/v1/ops/status")
def status(ctx: ContextDep, session: SessionDep, p: PrincipalDep) -> dict[str, Any]:
    account_id = scope(p)
    return ops.status_report(
        session=session, account_id=account_id, depths=queue_probe(ctx).depths()
    )


@router.get("/v1/ops/throughput")
def throughput(
    session: SessionDep,
    p: PrincipalDep,
    minutes: Annotated[int, Query(ge=1, le=1440)] = 60,
) -> dict[str, Any]:
    rows = ops.throughput(session=session, account_id=scope(p), minutes=minutes)
    return {
        "items": [
            {
                "minute": r.start,
                "stored": r.stored,
                "processed": r.processed,
                "failed": r.failed,
                "backlog": r.backlog,
            }
            for r in rows
        ]
    }


def failure_viewer(p: Principal) -> failure_records.FailureViewer:
    """The operator: every account; an admin: their account; a member: their own."""
    if p.is_operator:
        return failure_records.OPERATOR
    return failure_records.FailureViewer(
        account_id=p.account_id, user_id=p.user_id, own_only=not p.is_admin
    )


@router.get("/v1/ops/failures")
def failures(
    session: SessionDep,
    p: PrincipalDep,
    page: ListPageDep,
    all_: Annotated[bool, Query(alias="all")] = False,
    since: datetime | None = None,
) -> dict[str, Any]:
    """Failures, newest first (unresolved only unless ``all=true``).

    Personal-inbox mail follows C4 (§6): the owner of a personal connection sees the failures
    of its mail with their error text and may retry them; admins see their account's failures
    and the operator every account's, but for another user's personal mail only that it
    exists — stage, attempts, connection — with ``error: null`` and ``redacted: true``. A
    member sees only the failures of their own personal connections.
    """
    viewer = failure_viewer(p)
    rows = failure_records.list_failures(
        session=session,
        viewer=viewer,
        include_resolved=all_,
        since=since,
        limit=page.limit,
        offset=page.offset,
        before_id=page.before_id,
    )
    return {"items": [failure_records.failure_view(r, viewer) for r in rows]}


@router.post("/v1/ops/failures/{failure_id}/retry", status_code=202)
def retry(
    ctx: ContextDep, session: SessionDep, p: PrincipalDep, failure_id: DbId
) -> dict[str, Any]:
    """Retry a failure the caller sees (see ``GET /v1/ops/failures``): admins and the operator
    may retry personal mail too — a retry shows nothing of the message; its new decision is
    the owner's alone (C4)."""
    viewer = failure_viewer(p)
    stored_id = failure_records.retry_failure(
        session=session, account_id=viewer.account_id, failure_id=failure_id, viewer=viewer
    )
    # Committed before enqueueing, so the worker that takes the task finds the row ``stored``.
    session.commit()
    sender = ctx.extras.get("task_sender")
    enqueued = bool(stored_id is not None and sender is not None and sender.process([stored_id]))
    # Not enqueued (no sender here, or the broker is down): the sweeper takes the stored row.
    return {"failure_id": failure_id, "stored_message_id": stored_id, "enqueued": enqueued}


@router.get("/metrics", include_in_schema=False)
def metrics(
    ctx: ContextDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    """Prometheus text. Needs the operator token unless ``INBOXLOG_METRICS_PUBLIC=true``;
    checked without touching the database, and a scrape reads no message table."""
    if not ctx.settings.metrics_public and not is_operator_token(ctx, creds):
        raise Unauthorized("/metrics needs the operator token")
    return Response(generate_latest(_registry(ctx)), media_type=CONTENT_TYPE_LATEST)


def _asset(name: str) -> str:
    return resources.files("gateway.api.static").joinpath(name).read_text("utf-8")


@router.get("/ops", include_in_schema=False)
def ops_page() -> HTMLResponse:
    headers = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"}
    return HTMLResponse(_asset("ops.html"), headers=headers)


@router.get("/ops/ops.js", include_in_schema=False)
def ops_script() -> Response:
    return Response(
        _asset("ops.js"),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )

"""Counters for /metrics, and indexes for keyset paging and bounded ops queries

ops_counters: every counter series (messages received, processed, reason codes, failures,
the latency histogram, SMTP replies), added to by the processes that do the work; it replaces
gateway_counters, whose SMTP reply counts move over as ``smtp_replies{code}``. A scrape reads
this table instead of scanning the message tables. Counters other than the SMTP replies start
at zero (Prometheus takes a counter reset in its stride).

Indexes: the backlog (stored or processing) as a partial index; unresolved failures (partial)
and failures per account; decisions by account and C4 privacy; conversations by inbox and
status / assignee in latest-message order; logged emails in timeline order (an expression
index); users, contacts, companies and team inboxes per account in id order; a member's
inboxes. Each backs the keyset order of a list route, so a deep page costs what the first
one does.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BACKLOG = "status IN ('stored', 'processing')"
OPEN = "resolved_at IS NULL"

# (name, table, columns, partial-index predicate or None)
INDEXES: tuple[tuple[str, str, list[str | sa.TextClause], str | None], ...] = (
    ("ix_stored_messages_backlog", "stored_messages", ["status", "account_id", "received_at"],
     BACKLOG),
    ("ix_decisions_account_private_id", "decisions", ["account_id", "private_to_user_id", "id"],
     None),
    ("ix_failures_open", "failures", ["id"], OPEN),
    ("ix_failures_account_open", "failures", ["account_id", "id"], OPEN),
    ("ix_failures_account_id_id", "failures", ["account_id", "id"], None),
    ("ix_users_account_id_id", "users", ["account_id", "id"], None),
    ("ix_companies_account_id_id", "companies", ["account_id", "id"], None),
    ("ix_contacts_account_id_id", "contacts", ["account_id", "id"], None),
    ("ix_team_inboxes_account_id_id", "team_inboxes", ["account_id", "id"], None),
    ("ix_inbox_members_user_id", "inbox_members", ["user_id", "inbox_id"], None),
    ("ix_conversations_inbox_last", "conversations", ["inbox_id", "last_message_at", "id"], None),
    ("ix_conversations_inbox_status_last", "conversations",
     ["inbox_id", "status", "last_message_at", "id"], None),
    ("ix_conversations_inbox_assignee_last", "conversations",
     ["inbox_id", "assignee_id", "last_message_at", "id"], None),
    ("ix_logged_emails_timeline", "logged_emails",
     ["account_id", sa.text("coalesce(date, received_at)"), "received_at", "id"], None),
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "ops_counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("labels", sa.String(255), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", name=op.f("pk_ops_counters")),
    )
    op.execute(
        "INSERT INTO ops_counters (name, labels, value, updated_at) "
        "SELECT 'smtp_replies', 'code=' || code, count, updated_at FROM gateway_counters"
    )
    op.drop_table("gateway_counters")
    for name, table, columns, where in INDEXES:
        # Dialect options travel as **kw (Any), beside create_index's own keywords.
        partial: dict[str, Any] = {} if where is None else {
            "postgresql_where": sa.text(where), "sqlite_where": sa.text(where)
        }  # fmt: skip
        op.create_index(name, table, columns, unique=False, **partial)


def downgrade() -> None:
    for name, table, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.create_table(
        "gateway_counters",
        sa.Column("code", sa.String(8), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_gateway_counters")),
    )
    op.execute(
        "INSERT INTO gateway_counters (code, count, updated_at) "
        "SELECT substr(labels, 6), CAST(value AS BIGINT), updated_at FROM ops_counters "
        "WHERE name = 'smtp_replies'"
    )
    op.drop_table("ops_counters")

"""Hardening: proven personal connections, the gateway's sender verdict, stop reasons, and the
thread match and routing trace on decisions

connections.verified_at: C7 — a personal connection counts (internal, known sender, the
owner's mail) only once proven. Existing personal connections that have synced (a successful
login) are proven; the others become ``unverified``.

stored_messages.sender_verdict: what the gateway found about this copy's sender ("refused",
"authenticated", "unauthenticated"); stored_messages.last_stop: why the last attempt stopped;
stored_messages.solo_attempts: claims of the row in a batch of its own (a message that stops its
worker is retried alone, and fails after three such attempts).

decisions.thread / decisions.routing: how team mail was threaded and the routing trace.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_connections_account_id_id", ["account_id", "id"], unique=False)
    op.execute(
        "UPDATE connections SET verified_at = created_at "
        "WHERE kind = 'personal' AND last_sync_at IS NOT NULL"
    )
    op.execute(
        "UPDATE connections SET status = 'unverified' "
        "WHERE kind = 'personal' AND verified_at IS NULL AND status IN ('active', 'pending')"
    )
    with op.batch_alter_table("stored_messages") as batch:
        batch.add_column(sa.Column("sender_verdict", sa.String(16), nullable=True))
        batch.add_column(sa.Column("last_stop", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("solo_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("stored_messages") as batch:
        batch.create_index(
            "ix_stored_messages_raw_received",
            ["received_at"],
            unique=False,
            postgresql_where=sa.text("raw IS NOT NULL"),
            sqlite_where=sa.text("raw IS NOT NULL"),
        )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("thread", shared.db.base.JSONValue(), nullable=True))
        batch.add_column(sa.Column("routing", shared.db.base.JSONValue(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("routing")
        batch.drop_column("thread")
    with op.batch_alter_table("stored_messages") as batch:
        batch.drop_index("ix_stored_messages_raw_received")
        batch.drop_column("solo_attempts")
        batch.drop_column("last_stop")
        batch.drop_column("sender_verdict")
    with op.batch_alter_table("connections") as batch:
        batch.drop_index("ix_connections_account_id_id")
        batch.drop_column("verified_at")

"""Outbound mail (§9): SMTP settings on connections, the outbox and its copies, tracking links
and events, contacts' tracking opt-out, and the sender of mail logged at sending

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("smtp_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("smtp_port", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("smtp_security", sa.String(16), nullable=True))
        batch.add_column(sa.Column("smtp_username", sa.String(320), nullable=True))
        batch.add_column(sa.Column("smtp_password_enc", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("save_sent", sa.String(8), nullable=False, server_default="auto")
        )
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column("tracking_opt_out", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("stored_messages") as batch:
        batch.add_column(sa.Column("acting_user_id", sa.Integer(), nullable=True))
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("sender_id", sa.Integer(), nullable=True),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("mail_from", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("recipients", shared.db.base.JSONValue(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("html", sa.Boolean(), nullable=False),
        sa.Column("log", sa.Boolean(), nullable=False),
        sa.Column("track", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", UTC, nullable=True),
        sa.Column("claimed_until", UTC, nullable=True),
        sa.Column("stored_message_id", sa.Integer(), nullable=True),
        sa.Column("sent_folder", sa.String(16), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"],
            name=op.f("fk_outbox_account_id_accounts"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"], ["connections.id"],
            name=op.f("fk_outbox_connection_id_connections"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"], ["users.id"],
            name=op.f("fk_outbox_sender_id_users"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )  # fmt: skip
    op.create_index("ix_outbox_status_next", "outbox", ["status", "next_attempt_at"])
    op.create_table(
        "outbox_copies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("recipients", shared.db.base.JSONValue(), nullable=False),
        sa.Column("tracked", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("accepted_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"],
            name=op.f("fk_outbox_copies_outbox_id_outbox"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_copies")),
    )  # fmt: skip
    op.create_index(op.f("ix_outbox_copies_outbox_id"), "outbox_copies", ["outbox_id"])
    op.create_table(
        "tracking_links",
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("copy_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"],
            name=op.f("fk_tracking_links_outbox_id_outbox"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["copy_id"], ["outbox_copies.id"],
            name=op.f("fk_tracking_links_copy_id_outbox_copies"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_tracking_links")),
    )  # fmt: skip
    op.create_index(op.f("ix_tracking_links_outbox_id"), "tracking_links", ["outbox_id"])
    op.create_table(
        "tracking_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("copy_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("at", UTC, nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"],
            name=op.f("fk_tracking_events_outbox_id_outbox"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_events")),
    )  # fmt: skip
    op.create_index("ix_tracking_events_outbox_id", "tracking_events", ["outbox_id", "id"])
    op.create_index("ix_tracking_events_copy_at", "tracking_events", ["copy_id", "at"])


def downgrade() -> None:
    op.drop_table("tracking_events")
    op.drop_table("tracking_links")
    op.drop_table("outbox_copies")
    op.drop_table("outbox")
    with op.batch_alter_table("stored_messages") as batch:
        batch.drop_column("acting_user_id")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("tracking_opt_out")
    with op.batch_alter_table("connections") as batch:
        for column in (
            "save_sent",
            "smtp_password_enc",
            "smtp_username",
            "smtp_security",
            "smtp_port",
            "smtp_host",
        ):
            batch.drop_column(column)

"""Outbound at speed (§9): a copy's tracking links by copy (a click batch reads them), and a
connection's queued outbox entries (a delivery takes them together over one session), and an
account's outbox by Message-ID (the IMAP copy of mail sent with log: false stays unlogged)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tracking_links_copy_id", "tracking_links", ["copy_id"])
    op.create_index("ix_outbox_connection_status", "outbox", ["connection_id", "status"])
    op.create_index("ix_outbox_account_message", "outbox", ["account_id", "message_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_account_message", table_name="outbox")
    op.drop_index("ix_outbox_connection_status", table_name="outbox")
    op.drop_index("ix_tracking_links_copy_id", table_name="tracking_links")

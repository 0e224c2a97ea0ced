"""A thousand mailboxes per poller (§8): connections.control_version, bumped whenever a setting
the poller watches changes, so one query per scan tells a poller which of its connections to
re-read instead of every connection's thread reading its row every few seconds

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(
            sa.Column("control_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("control_version")

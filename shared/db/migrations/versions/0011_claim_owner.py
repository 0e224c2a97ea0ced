"""Claims name their task: a row in processing is taken only by the task that claimed it (its
redelivery after the worker died) or, once the claim went stale, by anyone (§6: a message a live
worker is processing is never handed to a second worker, not even by a duplicate task).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stored_messages") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stored_messages") as batch:
        batch.drop_column("claimed_by")

"""Subject threading by one index range (§5): a team inbox's conversations by (subject key,
external participant, last message), so finding the conversation a message continues reads
only the conversations with that subject and that participant — not every conversation of the
inbox with a common subject ("Re: Invoice", "Question") — whatever the size of the inbox.
It replaces (inbox, subject), which it covers.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_conversations_inbox_thread",
        "conversations",
        ["inbox_id", "thread_subject", "external_address", "last_message_at"],
    )
    op.drop_index("ix_conversations_inbox_subject", table_name="conversations")


def downgrade() -> None:
    op.create_index(
        "ix_conversations_inbox_subject", "conversations", ["inbox_id", "thread_subject"]
    )
    op.drop_index("ix_conversations_inbox_thread", table_name="conversations")

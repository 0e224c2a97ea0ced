"""Lists at a million emails (§7 keyset, §8 p99 < 50 ms): timelines by their own index, the
decisions list by filter and by member, an email's outbox entry by its decision

Timelines: a contact's (company's) emails were the join of its links with the account-wide
timeline index — either every link of the contact read and sorted, or the account's timeline
walked until a page of the contact's emails turned up (a mid-sized contact on a big account:
thousands of rows per page, deep or not). Each link now carries its email's sort key
(``email_sort_at`` = coalesce(date, received_at), ``email_received_at``), indexed with the
contact (company) in timeline order: a page is a range of that index, at any depth. The old
one-column indexes are prefixes of the new ones and go, and so does the account-wide
``ix_logged_emails_timeline``, which no query reads any more (one index less to write per
logged email).

Decisions: ``inbox_id`` (the stored message's team inbox, copied) so a member's inboxes are
ranges of their own; indexes for a member's own acts, for the outcome and source filters
within the C4 ranges, and by email (the email view finds its outbox entry through it, and the
email's deletion sets it null). ``ix_decisions_account_id`` is a prefix of the C4 index.
Outbox by stored message (the other half of that lookup).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LINKS = (("email_contacts", "contact_id"), ("email_companies", "company_id"))

DECISION_INDEXES = (
    ("ix_decisions_account_private_outcome_id",
     ["account_id", "private_to_user_id", "outcome", "id"]),
    ("ix_decisions_account_private_source_id",
     ["account_id", "private_to_user_id", "source", "id"]),
    ("ix_decisions_inbox_private_id", ["inbox_id", "private_to_user_id", "id"]),
    ("ix_decisions_acting_private_id", ["acting_user_id", "private_to_user_id", "id"]),
    ("ix_decisions_email_id", ["email_id"]),
)  # fmt: skip


def _backfill_links(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"UPDATE {table} SET email_sort_at = coalesce(e.date, e.received_at), "
            f"email_received_at = e.received_at FROM logged_emails e WHERE e.id = {table}.email_id"
        )
    else:
        op.execute(
            f"UPDATE {table} SET "
            "email_sort_at = (SELECT coalesce(e.date, e.received_at) FROM logged_emails e "
            f"WHERE e.id = {table}.email_id), "
            "email_received_at = (SELECT e.received_at FROM logged_emails e "
            f"WHERE e.id = {table}.email_id)"
        )


def upgrade() -> None:
    for table, key in LINKS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("email_sort_at", UTCDateTime(), nullable=True))
            batch.add_column(sa.Column("email_received_at", UTCDateTime(), nullable=True))
        _backfill_links(table)
        with op.batch_alter_table(table) as batch:
            batch.alter_column("email_sort_at", existing_type=UTCDateTime(), nullable=False)
            batch.alter_column("email_received_at", existing_type=UTCDateTime(), nullable=False)
            batch.drop_index(f"ix_{table}_{key}")
            batch.create_index(
                f"ix_{table}_timeline", [key, "email_sort_at", "email_received_at", "email_id"]
            )

    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("inbox_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_decisions_inbox_id_team_inboxes",
            "team_inboxes",
            ["inbox_id"],
            ["id"],
            ondelete="SET NULL",
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE decisions SET inbox_id = s.inbox_id FROM stored_messages s "
            "WHERE s.id = decisions.stored_message_id AND s.inbox_id IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE decisions SET inbox_id = (SELECT s.inbox_id FROM stored_messages s "
            "WHERE s.id = decisions.stored_message_id)"
        )
    for name, columns in DECISION_INDEXES:
        op.create_index(name, "decisions", columns)
    op.drop_index("ix_decisions_account_id", table_name="decisions")
    op.create_index("ix_outbox_stored_message_id", "outbox", ["stored_message_id"])
    op.drop_index("ix_logged_emails_timeline", table_name="logged_emails")


def downgrade() -> None:
    op.create_index(
        "ix_logged_emails_timeline",
        "logged_emails",
        ["account_id", sa.text("coalesce(date, received_at)"), "received_at", "id"],
    )
    op.drop_index("ix_outbox_stored_message_id", table_name="outbox")
    op.create_index("ix_decisions_account_id", "decisions", ["account_id"])
    for name, _ in reversed(DECISION_INDEXES):
        op.drop_index(name, table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("fk_decisions_inbox_id_team_inboxes", type_="foreignkey")
        batch.drop_column("inbox_id")
    for table, key in reversed(LINKS):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_timeline")
            batch.create_index(f"ix_{table}_{key}", [key])
            batch.drop_column("email_received_at")
            batch.drop_column("email_sort_at")

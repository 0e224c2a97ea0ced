"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db.base

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("bcc_token", sa.String(length=64), nullable=False),
        sa.Column("forward_token", sa.String(length=64), nullable=False),
        sa.Column("settings", shared.db.base.JSONValue(), nullable=False),
        sa.Column("config_version", sa.Integer(), nullable=False),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("bcc_token", name=op.f("uq_accounts_bcc_token")),
        sa.UniqueConstraint("forward_token", name=op.f("uq_accounts_forward_token")),
    )
    op.create_table(
        "gateway_counters",
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_gateway_counters")),
    )
    op.create_table(
        "companies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_companies_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_companies")),
        sa.UniqueConstraint("account_id", "domain", name=op.f("uq_companies_account_id_domain")),
    )
    op.create_table(
        "team_inboxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("sender_name", sa.String(length=200), nullable=True),
        sa.Column("forward_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_team_inboxes_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_inboxes")),
        sa.UniqueConstraint("forward_token", name=op.f("uq_team_inboxes_forward_token")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("default_log", sa.Boolean(), nullable=False),
        sa.Column("default_track", sa.Boolean(), nullable=False),
        sa.Column("never_log", shared.db.base.JSONValue(), nullable=False),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role in ('admin', 'member')", name=op.f("ck_users_role")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_users_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("account_id", "email", name=op.f("uq_users_account_id_email")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_api_tokens_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("inbox_id", sa.Integer(), nullable=True),
        sa.Column("meetings", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("imap_host", sa.String(length=255), nullable=True),
        sa.Column("imap_port", sa.Integer(), nullable=True),
        sa.Column("imap_security", sa.String(length=16), nullable=True),
        sa.Column("imap_username", sa.String(length=320), nullable=True),
        sa.Column("imap_password_enc", sa.Text(), nullable=True),
        sa.Column("imap_folders", shared.db.base.JSONValue(), nullable=True),
        sa.Column("imap_since", sa.Date(), nullable=True),
        sa.Column("backfill_since", sa.Date(), nullable=True),
        sa.Column("sync_requested_at", shared.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_sync_at", shared.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", shared.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'personal' AND user_id IS NOT NULL AND inbox_id IS NULL) OR (kind = 'team' AND inbox_id IS NOT NULL AND user_id IS NULL)",
            name=op.f("ck_connections_kind_owner"),
        ),
        sa.CheckConstraint(
            "NOT (kind = 'team' AND meetings)", name=op.f("ck_connections_team_no_meetings")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_connections_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["team_inboxes.id"],
            name=op.f("fk_connections_inbox_id_team_inboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_connections_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.UniqueConstraint(
            "account_id", "address", name=op.f("uq_connections_account_id_address")
        ),
    )
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("company_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_contacts_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_contacts_company_id_companies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_contacts_owner_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("account_id", "email", name=op.f("uq_contacts_account_id_email")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_company_id"), ["company_id"], unique=False)

    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("thread_subject", sa.String(length=500), nullable=False),
        sa.Column("external_address", sa.String(length=320), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("tags", shared.db.base.JSONValue(), nullable=False),
        sa.Column("contact_ids", shared.db.base.JSONValue(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("last_message_at", shared.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status in ('open', 'closed')", name=op.f("ck_conversations_status")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_conversations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["users.id"],
            name=op.f("fk_conversations_assignee_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["team_inboxes.id"],
            name=op.f("fk_conversations_inbox_id_team_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversations_inbox_subject", ["inbox_id", "thread_subject"], unique=False
        )

    op.create_table(
        "inbox_members",
        sa.Column("inbox_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["team_inboxes.id"],
            name=op.f("fk_inbox_members_inbox_id_team_inboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_inbox_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", "user_id", name=op.f("pk_inbox_members")),
    )
    op.create_table(
        "round_robin_cursors",
        sa.Column("inbox_id", sa.Integer(), nullable=False),
        sa.Column("rule_key", sa.String(length=64), nullable=False),
        sa.Column("counts", shared.db.base.JSONValue(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["team_inboxes.id"],
            name=op.f("fk_round_robin_cursors_inbox_id_team_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", "rule_key", name=op.f("pk_round_robin_cursors")),
    )
    op.create_table(
        "routing_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("conditions", shared.db.base.JSONValue(), nullable=False),
        sa.Column("action", shared.db.base.JSONValue(), nullable=False),
        sa.Column("tags", shared.db.base.JSONValue(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["team_inboxes.id"],
            name=op.f("fk_routing_rules_inbox_id_team_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_rules")),
        sa.UniqueConstraint(
            "inbox_id", "position", name=op.f("uq_routing_rules_inbox_id_position")
        ),
    )
    op.create_table(
        "folder_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("messages_synced", sa.Integer(), nullable=False),
        sa.Column("updated_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_folder_states_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_folder_states")),
        sa.UniqueConstraint(
            "connection_id", "name", name=op.f("uq_folder_states_connection_id_name")
        ),
    )
    op.create_table(
        "stored_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=True),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("envelope_from", sa.String(length=320), nullable=True),
        sa.Column("envelope_to", shared.db.base.JSONValue(), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("folder", sa.String(length=500), nullable=True),
        sa.Column("folder_role", sa.String(length=16), nullable=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("raw_size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", shared.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_stored_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_stored_messages_connection_id_connections"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["team_inboxes.id"],
            name=op.f("fk_stored_messages_inbox_id_team_inboxes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_messages")),
        sa.UniqueConstraint(
            "connection_id",
            "folder",
            "uidvalidity",
            "uid",
            name=op.f("uq_stored_messages_connection_id_folder_uidvalidity_uid"),
        ),
    )
    with op.batch_alter_table("stored_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stored_messages_status_updated", ["status", "updated_at"], unique=False
        )

    op.create_table(
        "failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("stored_message_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", shared.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_failures_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["stored_message_id"],
            ["stored_messages.id"],
            name=op.f("fk_failures_stored_message_id_stored_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failures")),
    )
    with op.batch_alter_table("failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_failures_account_id"), ["account_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_failures_stored_message_id"), ["stored_message_id"], unique=False
        )

    op.create_table(
        "logged_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("in_reply_to", sa.String(length=998), nullable=True),
        sa.Column("references", shared.db.base.JSONValue(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("from_address", sa.String(length=320), nullable=True),
        sa.Column("from_name", sa.String(length=500), nullable=True),
        sa.Column("to", shared.db.base.JSONValue(), nullable=False),
        sa.Column("cc", shared.db.base.JSONValue(), nullable=False),
        sa.Column("date", shared.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("bounce_of_message_id", sa.String(length=998), nullable=True),
        sa.Column("forwarded_by_user_id", sa.Integer(), nullable=True),
        sa.Column("logged_by_user_id", sa.Integer(), nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("snippet", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("attachments", shared.db.base.JSONValue(), nullable=False),
        sa.Column("stored_message_id", sa.Integer(), nullable=True),
        sa.Column("received_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_logged_emails_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_logged_emails_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["forwarded_by_user_id"],
            ["users.id"],
            name=op.f("fk_logged_emails_forwarded_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["logged_by_user_id"],
            ["users.id"],
            name=op.f("fk_logged_emails_logged_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["stored_message_id"],
            ["stored_messages.id"],
            name=op.f("fk_logged_emails_stored_message_id_stored_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logged_emails")),
        sa.UniqueConstraint(
            "account_id", "identity", name=op.f("uq_logged_emails_account_id_identity")
        ),
    )
    with op.batch_alter_table("logged_emails", schema=None) as batch_op:
        batch_op.create_index(
            "ix_logged_emails_account_message_id", ["account_id", "message_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_logged_emails_conversation_id"), ["conversation_id"], unique=False
        )

    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("stored_message_id", sa.Integer(), nullable=False),
        sa.Column("received_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("codes", shared.db.base.JSONValue(), nullable=False),
        sa.Column("participants", shared.db.base.JSONValue(), nullable=False),
        sa.Column("email_id", sa.Integer(), nullable=True),
        sa.Column("acting_user_id", sa.Integer(), nullable=True),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("private_to_user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_decisions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["acting_user_id"],
            ["users.id"],
            name=op.f("fk_decisions_acting_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_decisions_connection_id_connections"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["logged_emails.id"],
            name=op.f("fk_decisions_email_id_logged_emails"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["private_to_user_id"],
            ["users.id"],
            name=op.f("fk_decisions_private_to_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["stored_message_id"],
            ["stored_messages.id"],
            name=op.f("fk_decisions_stored_message_id_stored_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("stored_message_id", name=op.f("uq_decisions_stored_message_id")),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decisions_account_id"), ["account_id"], unique=False)

    op.create_table(
        "email_companies",
        sa.Column("email_id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_email_companies_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["logged_emails.id"],
            name=op.f("fk_email_companies_email_id_logged_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("email_id", "company_id", name=op.f("pk_email_companies")),
    )
    with op.batch_alter_table("email_companies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_companies_company_id"), ["company_id"], unique=False
        )

    op.create_table(
        "email_contacts",
        sa.Column("email_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_email_contacts_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["logged_emails.id"],
            name=op.f("fk_email_contacts_email_id_logged_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("email_id", "contact_id", name=op.f("pk_email_contacts")),
    )
    with op.batch_alter_table("email_contacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_contacts_contact_id"), ["contact_id"], unique=False
        )

    op.create_table(
        "email_participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["logged_emails.id"],
            name=op.f("fk_email_participants_email_id_logged_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_participants")),
    )
    with op.batch_alter_table("email_participants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_participants_address"), ["address"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_email_participants_email_id"), ["email_id"], unique=False
        )

    op.create_table(
        "email_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("stored_message_id", sa.Integer(), nullable=True),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_email_sources_connection_id_connections"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["logged_emails.id"],
            name=op.f("fk_email_sources_email_id_logged_emails"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["stored_message_id"],
            ["stored_messages.id"],
            name=op.f("fk_email_sources_stored_message_id_stored_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_sources")),
        sa.UniqueConstraint(
            "email_id",
            "stored_message_id",
            name=op.f("uq_email_sources_email_id_stored_message_id"),
        ),
    )


def downgrade() -> None:

    op.drop_table("email_sources")
    with op.batch_alter_table("email_participants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_participants_email_id"))
        batch_op.drop_index(batch_op.f("ix_email_participants_address"))

    op.drop_table("email_participants")
    with op.batch_alter_table("email_contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_contacts_contact_id"))

    op.drop_table("email_contacts")
    with op.batch_alter_table("email_companies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_companies_company_id"))

    op.drop_table("email_companies")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decisions_account_id"))

    op.drop_table("decisions")
    with op.batch_alter_table("logged_emails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_logged_emails_conversation_id"))
        batch_op.drop_index("ix_logged_emails_account_message_id")

    op.drop_table("logged_emails")
    with op.batch_alter_table("failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_failures_stored_message_id"))
        batch_op.drop_index(batch_op.f("ix_failures_account_id"))

    op.drop_table("failures")
    with op.batch_alter_table("stored_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_stored_messages_status_updated")

    op.drop_table("stored_messages")
    op.drop_table("folder_states")
    op.drop_table("routing_rules")
    op.drop_table("round_robin_cursors")
    op.drop_table("inbox_members")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_inbox_subject")

    op.drop_table("conversations")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_company_id"))

    op.drop_table("contacts")
    op.drop_table("connections")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))

    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("team_inboxes")
    op.drop_table("companies")
    op.drop_table("gateway_counters")
    op.drop_table("accounts")

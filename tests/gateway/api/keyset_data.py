"""Builds one account with many emails, decisions and conversations, row by row in bulk, for
the keyset paging tests: dates with ties and gaps, private decisions, undated conversations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from shared.db.engine import transaction
from shared.db.models import (
    Conversation,
    Decision,
    EmailCompany,
    EmailContact,
    LoggedEmail,
    StoredMessage,
)
from tests.conftest import Api

BASE = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Dataset:
    account_id: int
    admin: str
    admin_id: int
    bob: str
    bob_id: int
    carol: str  # an admin with only a few private decisions, the oldest
    carol_id: int
    inbox_id: int
    contact_id: int
    company_id: int
    emails: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    conversations: list[dict[str, Any]]


def _insert(session: Any, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    stmt = sa.insert(model).returning(model.id, sort_by_parameter_order=True)
    return list(session.scalars(stmt, rows))


def build(api: Api, *, emails: int, decisions: int, conversations: int, tag: str) -> Dataset:
    acc = api.new_account(f"Keyset {tag}", f"alice@{tag}.example")
    admin, aid = acc["token"], acc["account"]["id"]
    bob = api.new_user(admin, f"bob@{tag}.example")
    carol = api.new_user(admin, f"carol@{tag}.example", role="admin")
    inbox = api.call(
        "POST", "/v1/inboxes", admin, 201, json={"name": "Sales", "member_ids": [bob["user"]["id"]]}
    )
    contact = api.call("POST", "/v1/contacts", admin, 201, json={"email": f"ken@{tag}-co.co.jp"})
    bob_id, admin_id = bob["user"]["id"], acc["admin"]["id"]

    email_rows = []
    for i in range(emails):
        # Triples share a date; every 7th has none (the order falls back to received_at);
        # received_at ties in pairs, so ids break the last ties.
        date = None if i % 7 == 0 else BASE + timedelta(minutes=i // 3)
        received = BASE + timedelta(minutes=(i * 2) // 5, seconds=30 * ((i // 2) % 2))
        email_rows.append(
            {
                "account_id": aid,
                "identity": f"{tag}-{i}",
                "subject": f"m{i}",
                "direction": "incoming",
                "date": date,
                "received_at": received,
            }
        )
    stored_rows = [
        {
            "account_id": aid,
            "source": "team" if i % 4 == 0 else "personal" if i % 3 == 0 else "bcc",
            "inbox_id": inbox["id"] if i % 4 == 0 else None,
            "raw": None,
            "raw_size": 0,
            "status": "done",
            "received_at": BASE + timedelta(seconds=i),
        }
        for i in range(decisions)
    ]
    with transaction(api.ctx.sessions) as s:
        email_ids = _insert(s, LoggedEmail, email_rows)
        if email_ids:
            keys = [
                {
                    "email_sort_at": r["date"] or r["received_at"],
                    "email_received_at": r["received_at"],
                }
                for r in email_rows
            ]
            s.execute(
                sa.insert(EmailContact),
                [
                    {"email_id": e, "contact_id": contact["id"], **k}
                    for e, k in zip(email_ids, keys, strict=True)
                ],
            )
            s.execute(
                sa.insert(EmailCompany),
                [
                    {"email_id": e, "company_id": contact["company_id"], **k}
                    for e, k in zip(email_ids, keys, strict=True)
                ],
            )
        stored_ids = _insert(s, StoredMessage, stored_rows)
        decision_rows = [
            {
                "account_id": aid,
                "stored_message_id": sid,
                "source": row["source"],
                "outcome": "logged" if i % 2 else "skipped",
                "codes": [],
                "participants": [],
                "private_to_user_id": carol["user"]["id"]
                if i < 3
                else bob_id
                if row["source"] == "personal"
                else None,
                "acting_user_id": bob_id if i % 5 == 0 else None,
                "inbox_id": row["inbox_id"],
            }
            for i, (sid, row) in enumerate(zip(stored_ids, stored_rows, strict=True))
        ]
        decision_ids = _insert(s, Decision, decision_rows)
        conv_rows = [
            {
                "account_id": aid,
                "inbox_id": inbox["id"],
                "subject": f"c{i}",
                "status": "closed" if i % 3 == 0 else "open",
                "assignee_id": bob_id if i % 2 else None,
                "last_message_at": None if i % 11 == 0 else BASE + timedelta(minutes=i // 2),
            }
            for i in range(conversations)
        ]
        conv_ids = _insert(s, Conversation, conv_rows)
    for row, i in zip(email_rows, email_ids, strict=True):
        row["id"] = i
    for row, i, st in zip(decision_rows, decision_ids, stored_rows, strict=True):
        row["id"], row["inbox_id"] = i, st["inbox_id"]
    for row, i in zip(conv_rows, conv_ids, strict=True):
        row["id"] = i
    return Dataset(
        account_id=aid,
        admin=admin,
        admin_id=admin_id,
        bob=bob["token"],
        bob_id=bob_id,
        carol=carol["token"],
        carol_id=carol["user"]["id"],
        inbox_id=inbox["id"],
        contact_id=contact["id"],
        company_id=contact["company_id"],
        emails=email_rows,
        decisions=decision_rows,
        conversations=conv_rows,
    )


def timeline_order(emails: list[dict[str, Any]]) -> list[int]:
    """§7: by date, falling back to received_at; then received_at; then id — newest first."""
    return [
        e["id"]
        for e in sorted(
            emails, key=lambda e: (e["date"] or e["received_at"], e["received_at"], e["id"]),
            reverse=True,
        )
    ]  # fmt: skip


def conversation_order(convs: list[dict[str, Any]]) -> list[int]:
    dated = [c for c in convs if c["last_message_at"] is not None]
    undated = [c for c in convs if c["last_message_at"] is None]
    return [
        c["id"] for c in sorted(dated, key=lambda c: (c["last_message_at"], c["id"]), reverse=True)
    ] + sorted((c["id"] for c in undated), reverse=True)

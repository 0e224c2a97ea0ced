"""Fills one account of a fresh PostgreSQL database with N logged emails, server-side
(``INSERT … SELECT`` over ``generate_series``: no row crosses the wire), for ``bench/api``.

The shape (deterministic: ``setseed``):
- 100 companies and 3,000 contacts (contact k at company k % 100). Each email names one
  contact drawn log-uniformly (P(k) ∝ 1/k, Zipf-like: contact 1 is on ~9 % of the mail, the
  median contact on a few hundred emails) and, one time in three, a second one at random.
- Mail arrives every 30 s on average, in pairs with the same ``received_at``; ``date`` is the
  sender's clock cut to the minute (ties by the dozen), a few minutes to two days earlier, and
  missing on 3 % (the order falls back to ``received_at``). Ids follow arrival, so the timeline
  order is not the id order.
- Sources: 30 % team (one inbox, conversations of about 3 messages, 70 % closed, a third
  assigned), 20 % personal (private decisions of their owner, 1 in 20 emails ``private``),
  the rest BCC. One decision per message: the N logged ones and N/10 more, skipped
  (1 in 100 of them ``failed``: a rare outcome to filter on). One email in
  20 was sent through inboxlog (an outbox row).
- The users (created through the API by the caller) are passed in: bob owns most personal
  mail and is in the inbox; carol owns 1 % of it and is in no inbox.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

CONTACTS = 3000
COMPANIES = 100


@dataclass(frozen=True)
class Users:
    account_id: int
    inbox_id: int
    admin_id: int
    bob_id: int  # member, in the inbox, owns 70 % of personal mail
    carol_id: int  # member, in no inbox, owns 1 % of personal mail
    dave_id: int  # member, in the inbox, owns the rest


def _steps(n: int, u: Users) -> list[tuple[str, str]]:
    skipped = n // 10
    a = u.account_id
    # Per email i (1..n): source by i % 10 — 0-2 team, 3-4 personal, else bcc.
    source = "CASE WHEN i % 10 < 3 THEN 'team' WHEN i % 10 < 5 THEN 'personal' ELSE 'bcc' END"
    owner = (
        f"CASE WHEN i % 10 NOT IN (3, 4) THEN NULL WHEN i % 100 = 3 THEN {u.carol_id} "
        f"WHEN i % 1000 < 700 THEN {u.bob_id} ELSE {u.dave_id} END"
    )
    received = "timestamptz '2024-01-01' + ((i / 2) * 60) * interval '1 second'"
    return [
        (
            "companies",
            f"""INSERT INTO companies (id, account_id, domain, name, created_at)
            SELECT k, {a}, 'firm' || k || '.example', 'Firm ' || k, now()
            FROM generate_series(1, {COMPANIES}) k""",
        ),
        (
            "contacts",
            f"""INSERT INTO contacts (id, account_id, email, name, company_id, created_at,
                tracking_opt_out)
            SELECT k, {a}, 'person' || k || '@firm' || (k % {COMPANIES} + 1) || '.example',
                'Person ' || k, k % {COMPANIES} + 1, now(), false
            FROM generate_series(1, {CONTACTS}) k""",
        ),
        ("seed", "SELECT setseed(0.42)"),
        (
            "stored messages",
            f"""INSERT INTO stored_messages (id, account_id, source, inbox_id, envelope_to,
                raw, raw_size, status, attempts, solo_attempts, received_at, updated_at,
                processed_at, acting_user_id)
            SELECT i, {a}, {source}, CASE WHEN i % 10 < 3 THEN {u.inbox_id} END, '[]'::jsonb,
                NULL::bytea, 2000 + i % 50000, 'done', 1, 0, {received}, {received}, {received},
                ({owner})::int
            FROM generate_series(1, {n}) i
            UNION ALL
            SELECT {n} + s, {a}, 'bcc', NULL, '[]', NULL, 1500, 'done', 1, 0,
                timestamptz '2024-01-01' + (s * 600) * interval '1 second', now(), now(), NULL
            FROM generate_series(1, {skipped}) s""",
        ),
        (
            "conversations",
            f"""INSERT INTO conversations (id, account_id, inbox_id, subject, thread_subject,
                external_address, status, assignee_id, tags, contact_ids, message_count,
                last_message_at, created_at)
            SELECT c, {a}, {u.inbox_id}, 'Order question ' || c, 'order question ' || c,
                'person' || (c % {CONTACTS} + 1) || '@example.net',
                CASE WHEN c % 10 < 7 THEN 'closed' ELSE 'open' END,
                CASE c % 6 WHEN 0 THEN {u.bob_id} WHEN 1 THEN {u.dave_id} END,
                '[]', '[]', 0, NULL, now()
            FROM generate_series(1, {n // 10 + 1}) c""",
        ),
        (
            "logged emails",
            f"""INSERT INTO logged_emails (id, account_id, identity, message_id, "references",
                subject, from_address, from_name, "to", cc, date, direction, kind,
                logged_by_user_id, visibility, conversation_id, snippet, attachments,
                stored_message_id, received_at)
            SELECT i, {a}, md5(i::text), 'm' || i || '@mail.example', '[]',
                'Subject number ' || i, 'person' || (i % {CONTACTS} + 1) || '@example.net',
                'Person ' || (i % {CONTACTS} + 1),
                '[{{"address": "alice@ours.example", "name": "Alice"}}]', '[]',
                CASE WHEN random() < 0.03 THEN NULL ELSE date_trunc('minute', {received}
                    - (CASE WHEN random() < 0.05 THEN random() * 172800 ELSE random() * 600
                       END) * interval '1 second') END,
                CASE WHEN i % 7 = 0 THEN 'outgoing' ELSE 'incoming' END, 'normal',
                {owner},
                CASE WHEN i % 10 IN (3, 4) AND i % 200 < 10 THEN 'private' ELSE 'account' END,
                CASE WHEN i % 10 < 3 THEN i / 10 + 1 END,
                'Hello, this is the start of message ' || i || ' — thanks for your order',
                '[]', i, {received}
            FROM generate_series(1, {n}) i""",
        ),
        (
            "conversation emails",
            f"""INSERT INTO conversation_emails (conversation_id, email_id)
            SELECT conversation_id, id FROM logged_emails
            WHERE account_id = {a} AND conversation_id IS NOT NULL""",
        ),
        (
            "conversation totals",
            """UPDATE conversations c SET message_count = t.n, last_message_at = t.last
            FROM (SELECT ce.conversation_id, count(*) n,
                         max(coalesce(e.date, e.received_at)) last
                  FROM conversation_emails ce JOIN logged_emails e ON e.id = ce.email_id
                  GROUP BY ce.conversation_id) t
            WHERE c.id = t.conversation_id""",
        ),
        (
            "email sources",
            f"""INSERT INTO email_sources (email_id, source, stored_message_id, created_at)
            SELECT i, {source}, i, {received} FROM generate_series(1, {n}) i""",
        ),
        (
            "email contacts",
            f"""INSERT INTO email_contacts (email_id, contact_id, email_sort_at,
                email_received_at)
            SELECT x.i, x.k, coalesce(e.date, e.received_at), e.received_at
            FROM (SELECT DISTINCT i, k FROM generate_series(1, {n}) i,
                  LATERAL (SELECT least({CONTACTS},
                               floor(exp(random() * ln({CONTACTS} + 1) + 0 * i))::int) AS k
                           UNION ALL
                           SELECT 1 + floor(random() * {CONTACTS})::int
                           WHERE random() < 0.33 AND i > 0) ks) x
            JOIN logged_emails e ON e.id = x.i""",
        ),
        (
            "email companies",
            """INSERT INTO email_companies (email_id, company_id, email_sort_at,
                email_received_at)
            SELECT DISTINCT ec.email_id, c.company_id, ec.email_sort_at, ec.email_received_at
            FROM email_contacts ec JOIN contacts c ON c.id = ec.contact_id""",
        ),
        (
            "decisions",
            f"""INSERT INTO decisions (id, account_id, stored_message_id, received_at, source,
                message_id, subject, outcome, codes, participants, email_id, acting_user_id,
                private_to_user_id, inbox_id, thread)
            SELECT s.id, {a}, s.id, s.received_at, s.source, 'm' || s.id || '@mail.example',
                'Subject number ' || s.id,
                CASE WHEN s.id <= {n} THEN 'logged' WHEN s.id % 100 = 0 THEN 'failed'
                    ELSE 'skipped' END,
                CASE WHEN s.id <= {n} THEN '["logged_contact"]' ELSE '["internal_only"]'
                    END::jsonb,
                ('[{{"address": "person' || (s.id % {CONTACTS} + 1)
                    || '@example.net", "action": "logged", "reason": "contact"}}]')::jsonb,
                CASE WHEN s.id <= {n} THEN s.id END, s.acting_user_id,
                CASE WHEN s.source = 'personal' THEN s.acting_user_id END, s.inbox_id,
                CASE WHEN s.source = 'team' THEN '{{"how": "subject"}}'::jsonb END
            FROM stored_messages s WHERE s.account_id = {a}""",
        ),
        (
            "outbox",
            f"""INSERT INTO outbox (account_id, sender_id, message_id, mail_from, subject,
                recipients, raw, html, log, track, status, attempts, stored_message_id,
                created_at, sent_at)
            SELECT {a}, {u.bob_id}, 'm' || i || '@mail.example', 'bob@ours.example',
                'Subject number ' || i, '[]', ''::bytea, false, true, false, 'sent', 1, i,
                now(), now()
            FROM generate_series(20, {n}, 20) i""",
        ),
        (
            "sequences",
            """SELECT setval(pg_get_serial_sequence(t, 'id'), (SELECT max(id) FROM
                   (SELECT max(id) id FROM companies UNION ALL SELECT max(id) FROM contacts
                    UNION ALL SELECT max(id) FROM stored_messages
                    UNION ALL SELECT max(id) FROM logged_emails
                    UNION ALL SELECT max(id) FROM decisions
                    UNION ALL SELECT max(id) FROM conversations) m) + 1)
            FROM unnest(ARRAY['companies', 'contacts', 'stored_messages', 'logged_emails',
                              'decisions', 'conversations']) t""",
        ),
    ]


def fill(dsn: str, n: int, users: Users, say: object = print) -> dict[str, float]:
    """Runs the steps in one transaction, then VACUUM ANALYZE; seconds per step."""
    import time

    took: dict[str, float] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SET work_mem = '64MB'")
        for name, sql in _steps(n, users):
            t0 = time.monotonic()
            conn.execute(sql)  # type: ignore[arg-type]  # our own SQL, no parameters
            took[name] = time.monotonic() - t0
            if callable(say):
                say(f"  filled {name} in {took[name]:.1f} s")
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.monotonic()
        conn.execute("VACUUM ANALYZE")
        took["vacuum analyze"] = time.monotonic() - t0
    return took

"""Stage ``thread``: which conversation of the team inbox a message belongs to (§5).

Headers first (In-Reply-To/References against the inbox's known Message-IDs), a bounce to the
conversation of the message it reports on, then the normalized subject with the same external
participant within 30 days — against what is recorded, then against the earlier messages of the
same batch (not recorded yet).

The match is made without a lock (``lookup``, then ``thread`` per message), and checked again
under the inbox's lock by ``settle`` just before ``converse`` (the lock is held until the batch
transaction ends), so two workers never open two conversations for one thread while most of
their batches' work — recording emails and contacts — runs side by side.

``lookup`` reads what the whole batch can thread on in at most three indexed statements per
account (emails by Message-ID, their conversations in the batch's inboxes, conversations by
subject and external participant), and ``thread`` then matches each message in memory: no
statement per message, and each read is an index range of the keys asked for, whatever the
number of conversations in the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Conversation, ConversationEmail, LoggedEmail
from shared.mail.subjects import thread_subject
from shared.rules.codes import TEAM_SOURCES
from shared.rules.logging_decision import AccountFacts
from worker.pipeline.content import EmailContent
from worker.pipeline.job import Batch, Job
from worker.pipeline.locks import lock_inboxes

SUBJECT_WINDOW = timedelta(days=30)
# Column limits of conversations.thread_subject / external_address: the keys are cut the same
# way where they are stored and where they are looked up, so long ones still match.
SUBJECT_CHARS, ADDRESS_CHARS = 500, 320


def subject_key(subject: str) -> str:
    return thread_subject(subject)[:SUBJECT_CHARS]


@dataclass(frozen=True)
class ThreadMatch:
    conversation_id: int | None
    how: str  # "references", "bounce", "subject", "batch" (an earlier message of the batch), "new"
    earlier: int | None = None  # "batch": the stored id of that earlier message

    @property
    def is_new(self) -> bool:
        return self.how == "new"

    def as_dict(self) -> dict[str, object]:
        return {"how": self.how, "conversation_id": self.conversation_id}


def external_address(job: Job) -> str | None:
    """The external participant subject threading goes by: the From when external, else the
    first external To/Cc."""
    return external_of(job.content, job.account)


def external_of(content: EmailContent | None, account: AccountFacts | None) -> str | None:
    if content is None or account is None:
        return None
    for a in (content.from_, *content.to, *content.cc):
        if a is not None and a.address and not account.is_internal(a.address):
            return a.address[:ADDRESS_CHARS]
    return None


# Built once, on the Core tables (no ORM execution context): these run for every batch of team
# mail, and building or ORM-wrapping a statement costs more Python than running it.
_E, _CE, _C = LoggedEmail.__table__.c, ConversationEmail.__table__.c, Conversation.__table__.c
# Per Message-ID looked up, at most this many emails are read: a Message-ID that many emails
# share (a broken client, a hostile sender) must not make a lookup unbounded. No ORDER BY (the
# newest is picked in memory): an "ORDER BY id DESC LIMIT n" invites the planner to walk the
# primary key (or any index on account_id) backwards through the whole account instead of
# reading the (account_id, message_id) index for just these ids.
EMAILS_PER_ID = 50


@cache
def _emails_by_message_id(n: int) -> sa.Select[Any]:
    """Emails of an account with one of ``n`` Message-IDs, at most EMAILS_PER_ID each on
    average. The LIMIT is written into the statement: as a parameter, a prepared statement's
    generic plan assumes it cuts the result short and reads an index on account_id alone."""
    return (
        sa.select(_E.id, _E.message_id)
        .where(
            _E.account_id == sa.bindparam("account"),
            _E.message_id.in_(sa.bindparam("ids", expanding=True)),
        )
        .limit(sa.literal_column(str(EMAILS_PER_ID * n)))
    )


_CONVERSATIONS_OF_EMAILS = (
    sa.select(_CE.email_id, _CE.conversation_id, _C.inbox_id)
    .join_from(ConversationEmail.__table__, Conversation.__table__, _C.id == _CE.conversation_id)
    .where(
        _CE.email_id.in_(sa.bindparam("emails", expanding=True)),
        _C.inbox_id.in_(sa.bindparam("inboxes", expanding=True)),
    )
)


@cache
def _by_subject(n: int) -> sa.Select[Any]:
    """The conversations for each of ``n`` (inbox, subject key, external) keys whose last
    message is recent enough: one branch per key, each an index range of
    ix_conversations_inbox_thread (0008) — equality on three of its columns, a range on the
    fourth — whatever the inbox holds. No ORDER BY ... LIMIT (the newest is picked in memory):
    without statistics the planner would walk the inbox's conversations newest first
    (ix_conversations_inbox_last) until one matched; nor one statement with a row-value IN,
    which it can plan as a walk of the inbox's last 30 days."""
    branches = [
        sa.select(
            _C.id, _C.inbox_id, _C.thread_subject, _C.external_address, _C.last_message_at
        ).where(
            _C.inbox_id == sa.bindparam(f"i{k}"),
            _C.thread_subject == sa.bindparam(f"s{k}"),
            _C.external_address == sa.bindparam(f"e{k}"),
            _C.last_message_at >= sa.bindparam(f"t{k}", type_=_C.last_message_at.type),
        )
        for k in range(n)
    ]
    return branches[0] if n == 1 else sa.select(sa.union_all(*branches).subquery())


SubjectKey = tuple[int, str, str]  # inbox, subject key, external address
SUBJECT_KEYS_PER_STATEMENT = 50  # a batch's keys, in statements of at most this many branches


@dataclass
class Candidates:
    """What the database holds for a batch's team mail to thread on, read in a few statements
    for the whole batch (``lookup``) rather than per message."""

    # (inbox, Message-ID) -> [(email id, conversation id)]: the inbox's conversations holding
    # an email with that Message-ID
    by_message_id: dict[tuple[int, str], list[tuple[int, int]]] = field(default_factory=dict)
    # (inbox, subject key, external) -> [(last message at, conversation id)], newest first
    by_subject: dict[SubjectKey, list[tuple[datetime, int]]] = field(default_factory=dict)

    def newest_of(self, inbox_id: int, ids: list[str]) -> int | None:
        """The conversation of this inbox holding the newest email with one of ``ids``."""
        best: tuple[int, int] | None = None
        for mid in ids:
            for email_id, conv_id in self.by_message_id.get((inbox_id, mid), ()):
                if best is None or email_id > best[0]:
                    best = (email_id, conv_id)
        return best[1] if best else None

    def by_subject_since(self, key: SubjectKey, since: datetime) -> int | None:
        """The key's newest conversation whose last message is no older than ``since``."""
        return next((cid for last, cid in self.by_subject.get(key, ()) if last >= since), None)


def _lookup_ids(job: Job) -> list[str]:
    content = job.content
    assert content is not None
    ids = [r for r in (content.in_reply_to, *content.references) if r]
    if content.kind == "bounce" and content.bounce_of_message_id:
        ids.append(content.bounce_of_message_id)
    return ids


def _subject_key(job: Job, account: AccountFacts | None) -> tuple[SubjectKey, datetime] | None:
    content = job.content
    assert content is not None and job.inbox_id is not None
    subject, ext = subject_key(content.subject), external_of(content, account)
    if not (subject and ext):
        return None
    return (job.inbox_id, subject, ext), (content.date or job.received_at or utcnow())


def is_team(job: Job) -> bool:
    return job.source in TEAM_SOURCES and job.inbox_id is not None and job.content is not None


def lookup(batch: Batch) -> None:
    """Read what the batch's team mail can thread on: the conversations holding the
    Message-IDs it refers to, and those with its subjects and external participants — a few
    indexed statements for the whole batch.

    No lock is taken here (unless an earlier attempt of the batch found a conflict): what is
    read is checked again under the inbox locks by ``settle``, after ``record``, so the time
    under the lock is that of ``settle``, ``converse`` and ``finish`` only."""
    team = [j for j in batch.live if is_team(j)]
    if not team:
        return
    if batch.lock_first:
        lock_inboxes(batch.db(), (j.inbox_id for j in team if j.inbox_id is not None))
    _read(batch.db(), team, batch.candidates, batch.accounts)


def _read(
    session: Session, team: list[Job], found: Candidates, accounts: dict[int, AccountFacts]
) -> None:
    inboxes = sorted({j.inbox_id for j in team if j.inbox_id is not None})
    wanted: dict[int, set[str]] = {}
    for j in team:
        wanted.setdefault(j.account_id, set()).update(_lookup_ids(j))
    for account_id, ids in sorted(wanted.items()):
        if not ids:
            continue
        emails: dict[int, str] = {
            eid: mid
            for eid, mid in session.execute(
                _emails_by_message_id(len(ids)), {"account": account_id, "ids": sorted(ids)}
            )
        }
        if not emails:
            continue
        for email_id, conv_id, inbox_id in session.execute(
            _CONVERSATIONS_OF_EMAILS, {"emails": sorted(emails), "inboxes": inboxes}
        ):
            key = (inbox_id, emails[email_id])
            found.by_message_id.setdefault(key, []).append((email_id, conv_id))
    since: dict[SubjectKey, datetime] = {}  # key -> the oldest last message any job accepts
    for j in team:
        if (sk := _subject_key(j, accounts.get(j.account_id))) is not None:
            skey, oldest = sk[0], sk[1] - SUBJECT_WINDOW
            since[skey] = min(since.get(skey, oldest), oldest)
    keys = sorted(since)
    for i in range(0, len(keys), SUBJECT_KEYS_PER_STATEMENT):
        chunk = keys[i : i + SUBJECT_KEYS_PER_STATEMENT]
        params: dict[str, Any] = {}
        for k, skey in enumerate(chunk):
            params |= {f"i{k}": skey[0], f"s{k}": skey[1], f"e{k}": skey[2], f"t{k}": since[skey]}
        for cid, inbox_id, subject, ext, last in session.execute(_by_subject(len(chunk)), params):
            found.by_subject.setdefault((inbox_id, subject, ext), []).append((last, cid))
    for rows in found.by_subject.values():
        rows.sort(reverse=True)  # newest first


class ThreadConflict(Exception):
    """Mail committed by another worker since ``lookup`` changes what a message of the batch
    threads on in a way that changes its decision: the batch runs again, locks first."""


def settle(batch: Batch) -> None:
    """Take the locks of the batch's team inboxes (ascending), then check the threading that
    ``lookup`` read without them against what is committed now: a message whose match changed
    takes the new one. Only when that would change a decision — a new conversation's routing
    rule skipped the message, and it now continues a conversation; or it now opens one, so its
    inbox's rules apply — is the batch run again (``ThreadConflict``), with the locks taken
    before ``lookup``. Two batches for one inbox thus overlap in everything but the short
    tail of ``settle``, ``converse`` and ``finish``, and never open two conversations for one
    thread."""
    team = [j for j in batch.live if j.thread is not None]
    if not team:
        return
    session = batch.db()
    locked = lock_inboxes(session, (j.inbox_id for j in team if j.inbox_id is not None))
    if not locked or batch.lock_first:
        return  # one writer at a time (SQLite), or lookup already ran under the locks
    fresh = Candidates()
    _read(session, team, fresh, batch.accounts)
    for job in team:
        assert job.thread is not None and job.inbox_id is not None
        earlier = batch.threads.get(job.inbox_id, [])[: batch.earlier_count.get(job.stored_id, 0)]
        again = find_conversation(fresh, job, earlier)
        if again == job.thread:
            continue
        was_new = job.thread.is_new
        if again.is_new and not was_new:
            raise ThreadConflict(job.stored_id)
        if was_new and not again.is_new:
            if job.routing is not None and job.routing.skip:
                raise ThreadConflict(job.stored_id)
            job.routing = None  # rules apply to a new conversation only (§5)
        job.thread = again


def find_conversation(
    found: Candidates, job: Job, earlier: list[ThreadKeys] | None = None
) -> ThreadMatch:
    """The conversation ``job`` joins. Each rule is tried against the earlier messages of the
    batch (``earlier``: newer than anything recorded) and then against what is recorded
    (``found``, read for the whole batch by ``lookup``)."""
    content = job.content
    assert content is not None and job.inbox_id is not None
    earlier = earlier or []
    if content.kind == "bounce" and content.bounce_of_message_id:
        # §5: a bounce goes with the message it reports on, whatever its own headers say.
        ids = [content.bounce_of_message_id]
        if (k := _earlier_by_message_ids(earlier, ids)) is not None:
            return ThreadMatch(None, "batch", k)
        if found_id := found.newest_of(job.inbox_id, ids):
            return ThreadMatch(found_id, "bounce")
    refs = [r for r in (content.in_reply_to, *reversed(content.references)) if r]
    if (k := _earlier_by_message_ids(earlier, refs)) is not None:
        return ThreadMatch(None, "batch", k)
    if found_id := found.newest_of(job.inbox_id, refs):
        return ThreadMatch(found_id, "references")
    if (sk := _subject_key(job, job.account)) is not None:
        key, when = sk
        for prior in reversed(earlier):
            same = (job.inbox_id, prior.subject, prior.external) == key
            if same and abs(when - prior.when) <= SUBJECT_WINDOW:
                return ThreadMatch(None, "batch", prior.stored_id)
        if found_id := found.by_subject_since(key, when - SUBJECT_WINDOW):
            return ThreadMatch(found_id, "subject")
    return ThreadMatch(None, "new")


def _earlier_by_message_ids(earlier: list[ThreadKeys], ids: list[str]) -> int | None:
    wanted = set(ids)
    return next((k.stored_id for k in reversed(earlier) if k.message_id in wanted), None)


@dataclass(frozen=True)
class ThreadKeys:
    """What a later message of the same batch can thread on before this one is recorded."""

    stored_id: int
    message_id: str | None
    subject: str
    external: str | None
    when: datetime


def thread_keys(job: Job) -> ThreadKeys:
    content = job.content
    assert content is not None
    return ThreadKeys(
        job.stored_id,
        content.message_id,
        subject_key(content.subject),
        external_address(job),
        content.date or job.received_at or utcnow(),
    )


def thread(job: Job, batch: Batch) -> None:
    """Find the conversation a team message joins, once (no statement: ``lookup`` read what
    the batch's mail can thread on)."""
    if not is_team(job) or job.inbox_id is None:
        return
    earlier = batch.threads.get(job.inbox_id, [])
    batch.earlier_count[job.stored_id] = len(earlier)  # what settle matches against again
    job.thread = find_conversation(batch.candidates, job, earlier)

"""Stage ``thread``: which conversation of the team inbox a message belongs to (§5).

Headers first (In-Reply-To/References against the inbox's known Message-IDs), a bounce to the
conversation of the message it reports on, then the normalized subject with the same external
participant within 30 days — against what is recorded, then against the earlier messages of the
same batch (not recorded yet). The match is made once, under the inbox's lock (taken for the
whole batch transaction by ``prefetch``), so two workers never open two conversations for one
thread, and the later stages (route, converse) use it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Conversation, ConversationEmail, LoggedEmail
from shared.mail.subjects import thread_subject
from shared.rules.codes import TEAM_SOURCES
from worker.pipeline.job import Batch, Job

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
    facts, account = job.facts, job.account
    if facts is None or account is None:
        return None
    for p in (facts.from_, *facts.to, *facts.cc):
        if p is not None and not account.is_internal(p.address):
            return p.address[:ADDRESS_CHARS]
    return None


# Built once, on the Core tables (no ORM execution context): these run for every team
# message, and building or ORM-wrapping a statement costs more Python than running it.
_E, _CE, _C = LoggedEmail.__table__.c, ConversationEmail.__table__.c, Conversation.__table__.c
_EMAILS_BY_MESSAGE_ID = (
    sa.select(_E.id)
    .where(
        _E.account_id == sa.bindparam("account"),
        _E.message_id.in_(sa.bindparam("ids", expanding=True)),
    )
    .order_by(_E.id.desc())
    .limit(50)
)
_CONVERSATIONS_OF_EMAILS = (
    sa.select(_CE.email_id, _CE.conversation_id)
    .join_from(ConversationEmail.__table__, Conversation.__table__, _C.id == _CE.conversation_id)
    .where(
        _CE.email_id.in_(sa.bindparam("emails", expanding=True)),
        _C.inbox_id == sa.bindparam("inbox"),
    )
)
_BY_SUBJECT = (
    sa.select(_C.id)
    .where(
        _C.inbox_id == sa.bindparam("inbox"),
        _C.thread_subject == sa.bindparam("subject"),
        _C.external_address == sa.bindparam("ext"),
        _C.last_message_at >= sa.bindparam("since", type_=_C.last_message_at.type),
    )
    .order_by(_C.last_message_at.desc())
    .limit(1)
)


def _by_message_ids(session: Session, job: Job, ids: list[str]) -> int | None:
    """The newest conversation of this inbox holding one of ``ids``.

    Two indexed steps on purpose: emails by (account, Message-ID) first, then the
    conversations of this inbox they are in. A join lets the planner walk every conversation
    of a big inbox.
    """
    if not ids:
        return None
    emails = list(session.scalars(_EMAILS_BY_MESSAGE_ID, {"account": job.account_id, "ids": ids}))
    if not emails:
        return None
    found = dict(
        session.execute(_CONVERSATIONS_OF_EMAILS, {"emails": emails, "inbox": job.inbox_id}).all()
    )
    return next((found[e] for e in emails if e in found), None)


def find_conversation(
    session: Session, job: Job, earlier: list[ThreadKeys] | None = None
) -> ThreadMatch:
    """The conversation ``job`` joins. Each rule is tried against the earlier messages of the
    batch (``earlier``: newer than anything recorded) and then against what is recorded."""
    content = job.content
    assert content is not None
    earlier = earlier or []
    if content.kind == "bounce" and content.bounce_of_message_id:
        # §5: a bounce goes with the message it reports on, whatever its own headers say.
        ids = [content.bounce_of_message_id]
        if (k := _earlier_by_message_ids(earlier, ids)) is not None:
            return ThreadMatch(None, "batch", k)
        if found := _by_message_ids(session, job, ids):
            return ThreadMatch(found, "bounce")
    refs = [r for r in (content.in_reply_to, *reversed(content.references)) if r]
    if (k := _earlier_by_message_ids(earlier, refs)) is not None:
        return ThreadMatch(None, "batch", k)
    if found := _by_message_ids(session, job, refs):
        return ThreadMatch(found, "references")
    subject, ext = subject_key(content.subject), external_address(job)
    if subject and ext:
        when = content.date or job.received_at or utcnow()
        for key in reversed(earlier):
            if (key.subject, key.external) == (subject, ext) and (
                abs(when - key.when) <= SUBJECT_WINDOW
            ):
                return ThreadMatch(None, "batch", key.stored_id)
        found = session.scalar(
            _BY_SUBJECT,
            {"inbox": job.inbox_id, "subject": subject, "ext": ext, "since": when - SUBJECT_WINDOW},
        )
        if found:
            return ThreadMatch(found, "subject")
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
    """Find the conversation a team message joins, once."""
    if job.source not in TEAM_SOURCES or job.inbox_id is None or job.content is None:
        return
    job.thread = find_conversation(batch.db(), job, batch.threads.get(job.inbox_id))

"""Which conversation of the team inbox a message belongs to (§5).

Headers first (In-Reply-To/References against the inbox's known Message-IDs), a bounce to the
conversation of the message it reports on, then the normalized subject with the same external
participant within 30 days. The lookup that decides runs under the inbox lock (conversations.py),
so two workers never open two conversations for one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Conversation, ConversationEmail, LoggedEmail
from shared.mail.threading import thread_subject
from worker.pipeline.job import Job

SUBJECT_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class ThreadMatch:
    conversation_id: int | None
    how: str  # "references", "bounce", "subject", "new"


def external_address(job: Job) -> str | None:
    d_participants = job.facts.to + job.facts.cc if job.facts else ()
    if (
        job.facts
        and job.facts.from_
        and job.account
        and not job.account.is_internal(job.facts.from_.address)
    ):
        return job.facts.from_.address
    for p in d_participants:
        if job.account and not job.account.is_internal(p.address):
            return p.address
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


def find_conversation(session: Session, job: Job) -> ThreadMatch:
    content = job.content
    assert content is not None
    if content.kind == "bounce" and content.bounce_of_message_id:
        # §5: a bounce goes with the message it reports on, whatever its own headers say.
        found = _by_message_ids(session, job, [content.bounce_of_message_id])
        if found:
            return ThreadMatch(found, "bounce")
    refs = [r for r in (content.in_reply_to, *reversed(content.references)) if r]
    found = _by_message_ids(session, job, refs)
    if found:
        return ThreadMatch(found, "references")
    subject, ext = thread_subject(content.subject), external_address(job)
    if subject and ext:
        when = content.date or utcnow()
        found = session.scalar(
            _BY_SUBJECT,
            {"inbox": job.inbox_id, "subject": subject, "ext": ext, "since": when - SUBJECT_WINDOW},
        )
        if found:
            return ThreadMatch(found, "subject")
    return ThreadMatch(None, "new")


@dataclass(frozen=True)
class ThreadKeys:
    """What a later message of the same batch can thread on before this one is recorded."""

    message_id: str | None
    subject: str
    external: str | None
    when: datetime


def thread_keys(job: Job) -> ThreadKeys:
    content = job.content
    assert content is not None
    return ThreadKeys(
        content.message_id,
        thread_subject(content.subject),
        external_address(job),
        content.date or job.received_at or utcnow(),
    )


def threads_with_earlier(job: Job, earlier: list[ThreadKeys]) -> bool:
    """Whether ``job`` joins the conversation of an earlier message of its batch — the same
    rules as :func:`find_conversation`, against messages not recorded yet."""
    content = job.content
    assert content is not None
    refs = {
        r for r in (content.in_reply_to, content.bounce_of_message_id, *content.references) if r
    }
    mine = thread_keys(job)
    for k in earlier:
        if k.message_id is not None and k.message_id in refs:
            return True
        if (
            mine.subject
            and mine.external
            and (k.subject, k.external) == (mine.subject, mine.external)
            and abs(mine.when - k.when) <= SUBJECT_WINDOW
        ):
            return True
    return False

"""Stage ``decide``: apply the pure §4 logging decision to the gathered facts."""

from __future__ import annotations

from shared.rules import codes as c
from shared.rules.logging_decision import decide as logging_decision
from worker.pipeline.job import Batch, Job
from worker.pipeline.thread_match import thread_keys


def decide(job: Job, batch: Batch) -> None:
    assert job.facts is not None and job.account is not None
    job.decision = logging_decision(job.facts, job.account)
    # What this message will record counts for the later messages of the batch, as if it had
    # been recorded already: its new contacts exist, it is a logged email to reply to, and a
    # team message kept in a conversation is a thread to join.
    if job.decision.outcome != c.LOGGED:
        return
    created = {p.address for p in job.decision.participants if p.action == c.ACT_CREATED}
    if created:
        batch.contacts.setdefault(job.account_id, set()).update(created)
    if job.content is not None and job.content.message_id:
        batch.logged_message_ids.setdefault(job.account_id, set()).add(job.content.message_id)
    if job.thread is not None and job.inbox_id is not None and job.decision.keep_in_conversation:
        batch.threads.setdefault(job.inbox_id, []).append(thread_keys(job))

"""Stage ``decide``: apply the pure §4 logging decision to the gathered facts."""

from __future__ import annotations

from shared.rules import codes as c
from shared.rules.logging_decision import decide as logging_decision
from worker.pipeline.job import Batch, Job


def decide(job: Job, batch: Batch) -> None:
    assert job.facts is not None and job.account is not None
    job.decision = logging_decision(job.facts, job.account)
    # What this message will record counts for the later messages of the batch, as if it had
    # been recorded already: its new contacts exist, and it is a logged email to reply to.
    if job.decision.outcome == c.LOGGED:
        created = {p.address for p in job.decision.participants if p.action == c.ACT_CREATED}
        if created:
            batch.contacts.setdefault(job.account_id, set()).update(created)
        if job.content is not None and job.content.message_id:
            batch.logged_message_ids.setdefault(job.account_id, set()).add(job.content.message_id)

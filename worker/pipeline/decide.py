"""Stage ``decide``: apply the pure §4 logging decision to the gathered facts."""

from __future__ import annotations

from shared.rules.logging_decision import decide as logging_decision
from worker.pipeline.job import Batch, Job


def decide(job: Job, batch: Batch) -> None:
    assert job.facts is not None and job.account is not None
    job.decision = logging_decision(job.facts, job.account)

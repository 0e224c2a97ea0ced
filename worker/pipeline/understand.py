"""Stage ``understand``: parse once, extract a forward's original, fix what will be shown."""

from __future__ import annotations

from shared.mail import parse_message
from shared.mail.forwards import extract_forward
from worker.pipeline.content import from_forward, from_parsed
from worker.pipeline.job import Job


def understand(job: Job) -> None:
    job.parsed = parse_message(job.raw)
    # Forward extraction applies to the account's forward_address only (§4); team mail is
    # stored as received.
    if job.source == "forward":
        job.forward = extract_forward(job.parsed)
        job.content = from_forward(job.parsed, job.forward)
    else:
        job.content = from_parsed(job.parsed)

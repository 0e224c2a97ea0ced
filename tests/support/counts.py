"""Counter rows for tests: SMTP reply counts as a gateway's flusher would have added them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared import counters


def add_gateway_counts(*, session: Session, deltas: dict[str, int]) -> None:
    counters.add_counts(
        session=session,
        deltas={
            (counters.SMTP_REPLIES, counters.encode_labels({"code": code})): n
            for code, n in deltas.items()
            if n
        },
    )

"""Operational counters written by the working processes and read by the API (``/metrics``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow


class OpsCounter(Base):
    """One counter series summed over every process: messages received by source, processed
    by source and outcome, reason codes, failures by stage, the latency histogram, SMTP
    replies by code (shared/counters.py names them).

    Each process adds the deltas of its in-memory counts every few seconds (an UPSERT), so a
    scrape reads this small table — a row per series — instead of the message tables.
    """

    __tablename__ = "ops_counters"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # The series' labels, canonical: ``k=v`` pairs sorted by key, joined by ``,``.
    labels: Mapped[str] = mapped_column(sa.String(255), primary_key=True, default="")
    value: Mapped[float] = mapped_column(sa.Double, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

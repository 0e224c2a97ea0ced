"""Operational counters written by edge processes and read by the API (``/metrics``, status)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow


class GatewayCounter(Base):
    """SMTP end-of-DATA replies by code, summed over every gateway process.

    Each gateway adds the deltas of its in-memory counts every few seconds (an UPSERT), so the
    API process — which never sees an SMTP session — can report them.
    """

    __tablename__ = "gateway_counters"

    code: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

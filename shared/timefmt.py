"""The API's one spelling of a moment: ``YYYY-MM-DDTHH:MM:SSZ`` (§7)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""What the API needs from the composition root: settings, sessions, the secret box."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.crypto import SecretBox


@dataclass
class ApiContext:
    settings: Settings
    sessions: sessionmaker[Session]
    box: SecretBox
    # Optional collaborators wired in by the CLI (broker probe for /readyz, task sender, ...).
    extras: dict[str, Any] = field(default_factory=dict)
    # Called when the app stops (after the last request), in reverse order.
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        while self.closers:
            self.closers.pop()()

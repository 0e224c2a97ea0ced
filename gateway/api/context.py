"""What the API needs from the composition root: settings, sessions, the secret box."""

from __future__ import annotations

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

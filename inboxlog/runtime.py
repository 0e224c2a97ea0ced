"""Builds the long-lived pieces every command needs from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, ensure_admin_token, load_settings
from shared.crypto import SecretBox
from shared.db.engine import make_engine, make_session_factory
from shared.logs import configure


@dataclass
class Runtime:
    settings: Settings
    engine: sa.Engine
    sessions: sessionmaker[Session]
    box: SecretBox


def build_runtime(*, generate_admin_token: bool = True) -> Runtime:
    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    if generate_admin_token:
        ensure_admin_token(settings)
    engine = make_engine(settings.database_url)
    return Runtime(settings, engine, make_session_factory(engine), SecretBox(settings.secret_key))

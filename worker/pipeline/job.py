"""The state one message carries through the stages, and what a batch shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.account_settings import AccountSettings
from shared.mail import ParsedMessage
from shared.mail.forwards import ForwardResult
from shared.rules.logging_decision import AccountFacts, LoggingDecision, MessageFacts


@dataclass
class Deps:
    sessions: sessionmaker[Session]
    # (account_id, config_version) -> AccountFacts, reused across batches in this process.
    facts_cache: dict[tuple[int, int], AccountFacts] = field(default_factory=dict)


@dataclass
class Batch:
    """What the stages of one batch share: its transaction and the facts read for it."""

    session: Session
    deps: Deps
    logging_domain: str
    accounts: dict[int, AccountFacts] = field(default_factory=dict)
    contacts: dict[int, set[str]] = field(default_factory=dict)  # account -> existing addresses
    # account -> Message-IDs logged by earlier messages of this batch (not recorded yet)
    logged_message_ids: dict[int, set[str]] = field(default_factory=dict)
    rules: dict[int, list[Any]] = field(default_factory=dict)  # inbox -> routing rules
    # inbox -> ThreadKeys of the batch's team messages routed so far (not recorded yet)
    threads: dict[int, list[Any]] = field(default_factory=dict)
    locked_inboxes: set[int] = field(default_factory=set)
    first_conversations: list[dict[str, int]] = field(default_factory=list)  # {e: email, c: conv}


@dataclass
class Job:
    stored_id: int
    # Filled by claim.
    account_id: int = 0
    source: str = ""
    inbox_id: int | None = None
    connection_id: int | None = None
    folder_role: str | None = None
    raw: bytes = b""
    received_at: Any = None
    attempts: int = 0
    # Filled by understand.
    parsed: ParsedMessage | None = None
    forward: ForwardResult | None = None
    content: Any = None  # EmailContent, or None for an unreadable forward
    # Filled by gather/thread/route/decide.
    settings: AccountSettings | None = None
    account: AccountFacts | None = None
    facts: MessageFacts | None = None
    thread: Any = None  # ThreadMatch for team mail
    routing: Any = None  # RoutingResult for a new team conversation
    decision: LoggingDecision | None = None
    # Filled by record.
    email_id: int | None = None
    contact_ids: list[int] = field(default_factory=list)
    outcome: str = ""
    keep_raw: bool = True
    # Set when a stage raised for this message (the rest of the batch goes on).
    error: BaseException | None = None
    failed_stage: str = ""
    timings: dict[str, float] = field(default_factory=dict)

"""The state one message carries through the stages, and what a batch shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from shared.account_settings import AccountSettings
from shared.mail import ParsedMessage
from shared.mail.forwards import ForwardResult
from shared.rules.logging_decision import AccountFacts, LoggingDecision, MessageFacts
from shared.rules.routing import RoutingResult

if TYPE_CHECKING:
    from worker.pipeline.content import EmailContent
    from worker.pipeline.thread_match import Candidates, ThreadKeys, ThreadMatch


@dataclass
class Deps:
    sessions: sessionmaker[Session]
    # (account_id, config_version) -> AccountFacts, reused across batches in this process.
    facts_cache: dict[tuple[int, int], AccountFacts] = field(default_factory=dict)
    # Hands stored ids back to the queue as a task of their own, with task options
    # (``count``, ``timed_out``); None without a queue (tests, tools).
    requeue: Callable[[list[int], dict[str, Any]], None] | None = None
    # Seconds after which another task's unrenewed claim on a row is stale (the sweeper's
    # threshold); None: only unowned claims are taken over.
    stale_after: float | None = None


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
    received_at: datetime | None = None
    attempts: int = 0
    sender_verdict: str | None = None
    acting_user_id: int | None = None  # source sent: who sent it through inboxlog (§9)
    solo_attempts: int = 0  # claims of it in a batch of its own (claim.py)
    # Filled by understand.
    parsed: ParsedMessage | None = None
    forward: ForwardResult | None = None
    content: EmailContent | None = None  # None for an unreadable forward
    # Filled by gather, thread, route and decide.
    settings: AccountSettings | None = None
    account: AccountFacts | None = None
    facts: MessageFacts | None = None
    thread: ThreadMatch | None = None  # team mail
    routing: RoutingResult | None = None  # a new team conversation, when the inbox has rules
    decision: LoggingDecision | None = None
    # Filled by record and converse.
    email_id: int | None = None
    conversation_id: int | None = None
    contact_ids: list[int] = field(default_factory=list)
    outcome: str = ""
    keep_raw: bool = True
    # Set when a stage raised for this message (the rest of the batch goes on).
    error: BaseException | None = None
    failed_stage: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    cpu: dict[str, float] = field(default_factory=dict)  # stage -> CPU seconds (this thread)

    def reset(self) -> None:
        """Back to what understand left, for a re-run in a transaction of its own."""
        self.error, self.failed_stage, self.decision, self.routing = None, "", None, None
        self.thread, self.email_id, self.conversation_id = None, None, None
        self.contact_ids, self.outcome, self.keep_raw = [], "", True


@dataclass
class Batch:
    """What the stages of one batch share: its jobs, its transaction and what was read for it."""

    deps: Deps
    logging_domain: str
    jobs: list[Job] = field(default_factory=list)
    session: Session | None = None  # the shared transaction, while it is open
    current: Job | None = None  # the message a per-message stage is working on
    accounts: dict[int, AccountFacts] = field(default_factory=dict)
    contacts: dict[int, set[str]] = field(default_factory=dict)  # account -> existing addresses
    # account -> Message-IDs logged by earlier messages of this batch (not recorded yet)
    logged_message_ids: dict[int, set[str]] = field(default_factory=dict)
    # account -> Message-IDs of mail sent through inboxlog with ``log: false`` (§9), among
    # the batch's Sent-folder copies: the IMAP copy must not log what the sender kept out.
    unlogged_sends: dict[int, set[str]] = field(default_factory=dict)
    rules: dict[int, list[Any]] = field(default_factory=dict)  # inbox -> routing rules
    # what the database holds for the batch's team mail to thread on (read by ``lookup``)
    candidates: Candidates = field(default_factory=lambda: _candidates())
    # inbox -> thread keys of the batch's team messages kept so far (not recorded yet)
    threads: dict[int, list[ThreadKeys]] = field(default_factory=dict)
    # stored id -> how many of its inbox's ``threads`` came before it (its earlier messages)
    earlier_count: dict[int, int] = field(default_factory=dict)
    # True once a run found a threading conflict: the inbox locks come before ``lookup``
    lock_first: bool = False
    # stored id -> conversation, for later messages of the batch that thread on it
    conversations: dict[int, int] = field(default_factory=dict)
    # {e: email, c: conversation}: the emails that get their first conversation in this batch
    first_conversations: list[dict[str, int]] = field(default_factory=list)

    def restart(self) -> None:
        """Back to before the batch transaction, for a run with the locks taken first: what
        was read or kept for the live jobs is read again."""
        keep = {"deps", "logging_domain", "jobs"}
        fresh = Batch(self.deps, self.logging_domain)
        for f in fields(self):
            if f.name not in keep:
                setattr(self, f.name, getattr(fresh, f.name))
        self.lock_first = True
        for job in self.live:
            job.reset()

    @property
    def live(self) -> list[Job]:
        """The jobs no stage has failed."""
        return [j for j in self.jobs if j.error is None]

    def db(self) -> Session:
        assert self.session is not None, "a transactional stage ran outside the transaction"
        return self.session


def _candidates() -> Candidates:
    from worker.pipeline.thread_match import Candidates

    return Candidates()

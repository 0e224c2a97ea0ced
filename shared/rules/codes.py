"""Outcomes, decision reason codes and per-participant actions/reasons (§4), in one place."""

from __future__ import annotations

from typing import Literal, get_args

# Decision outcomes.
LOGGED = "logged"
DUPLICATE = "duplicate"
SKIPPED = "skipped"
REJECTED = "rejected"
FAILED = "failed"
# The same values as a type, for API parameters; the tuple is read from it.
Outcome = Literal["logged", "duplicate", "skipped", "rejected", "failed"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

# Decision reason codes.
NEVER_LOG = "never_log"
INTERNAL_ONLY = "internal_only"
LOGGING_OFF = "logging_off"
NO_CONTACTS = "no_contacts"
AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"
LIST = "list"
SKIPPED_BY_RULE = "skipped_by_rule"
UNKNOWN_SENDER = "unknown_sender"
# The From is a user, but the sender verification of the account (DKIM) failed for this copy.
SENDER_NOT_VERIFIED = "sender_not_verified"
# Mail to a team forward_address whose internal From is not authenticated (§4): incoming.
UNVERIFIED_INTERNAL_SENDER = "unverified_internal_sender"
# Personal mail from a connection whose address is not proven its owner's yet (C7).
UNVERIFIED_CONNECTION = "unverified_connection"
UNPARSEABLE_FORWARD = "unparseable_forward"
NOT_A_REPLY = "not_a_reply"
DUPLICATE_MESSAGE = "duplicate_message"
PROCESSING_FAILED = "processing_failed"  # a permanent error; a failure record holds the rest
PROCESSING_TIMEOUT = "processing_timeout"  # the task time limit stopped it, attempt after attempt
TOO_LARGE = "too_large"
MISSING_ON_SERVER = "missing_on_server"

# Per-participant actions.
ACT_LOGGED = "logged"
ACT_CREATED = "created_and_logged"
ACT_SKIPPED = "skipped"

# Per-participant reasons.
R_EXISTING_CONTACT = "existing_contact"
R_NEW_CONTACT = "new_contact"
R_NEVER_LOG = "never_log"
R_NOT_A_CONTACT = "not_a_contact"
R_AUTOMATED = "automated"
R_NOREPLY = "noreply_address"
R_CONTACTS_DISABLED = "contact_creation_off"

# What the gateway found about a copy's sender (stored_messages.sender_verdict).
VERDICT_REFUSED = "refused"
VERDICT_AUTHENTICATED = "authenticated"
VERDICT_UNAUTHENTICATED = "unauthenticated"

# Sources.
Source = Literal["bcc", "forward", "team", "personal", "sent"]
SOURCES: tuple[Source, ...] = get_args(Source)
# Sources whose mail lives in a team inbox's conversations (sent: a reply from the inbox, §9).
TEAM_SOURCES = ("team", "sent")

# Kinds that count as automated mail (§4): everything but normal and calendar.
AUTOMATED_KINDS = {"auto_reply": AUTO_REPLY, "bounce": BOUNCE, "list": LIST}

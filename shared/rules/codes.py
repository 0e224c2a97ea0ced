"""Outcomes, decision reason codes and per-participant actions/reasons (§4), in one place."""

from __future__ import annotations

# Decision outcomes.
LOGGED = "logged"
DUPLICATE = "duplicate"
SKIPPED = "skipped"
REJECTED = "rejected"
FAILED = "failed"
OUTCOMES = (LOGGED, DUPLICATE, SKIPPED, REJECTED, FAILED)

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
UNPARSEABLE_FORWARD = "unparseable_forward"
NOT_A_REPLY = "not_a_reply"
DUPLICATE_MESSAGE = "duplicate_message"
PROCESSING_FAILED = "processing_failed"  # a permanent error; a failure record holds the rest

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

# Sources.
SOURCES = ("bcc", "forward", "team", "personal")

# Kinds that count as automated mail (§4): everything but normal and calendar.
AUTOMATED_KINDS = {"auto_reply": AUTO_REPLY, "bounce": BOUNCE, "list": LIST}

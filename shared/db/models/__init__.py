"""Typed models for every concept of §2, split by area; importing this package registers them."""

from shared.db.models.connections import Connection, FolderState
from shared.db.models.crm import Company, Contact
from shared.db.models.emails import (
    Conversation,
    ConversationEmail,
    EmailCompany,
    EmailContact,
    EmailParticipant,
    EmailSource,
    LoggedEmail,
)
from shared.db.models.inboxes import InboxMember, RoundRobinCursor, RoutingRule, TeamInbox
from shared.db.models.intake import Decision, Failure, StoredMessage
from shared.db.models.oauth import OAuthGrant, OAuthState
from shared.db.models.ops import OpsCounter
from shared.db.models.outbound import Outbox, OutboxCopy, TrackingEvent, TrackingLink
from shared.db.models.tenancy import Account, ApiToken, User

__all__ = [
    "Account",
    "ApiToken",
    "Company",
    "Connection",
    "Contact",
    "Conversation",
    "ConversationEmail",
    "Decision",
    "EmailCompany",
    "EmailContact",
    "EmailParticipant",
    "EmailSource",
    "Failure",
    "FolderState",
    "InboxMember",
    "LoggedEmail",
    "OAuthGrant",
    "OAuthState",
    "OpsCounter",
    "Outbox",
    "OutboxCopy",
    "RoundRobinCursor",
    "RoutingRule",
    "StoredMessage",
    "TeamInbox",
    "TrackingEvent",
    "TrackingLink",
    "User",
]

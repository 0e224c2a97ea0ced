"""IMAP pollers: read-only sync of connected inboxes into the durable intake store."""

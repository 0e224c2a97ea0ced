"""Outbound mail (§9): delivering the outbox through each connection's SMTP server."""

"""Outbound mail (§9): sending, replying and tracking."""

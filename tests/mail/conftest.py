"""Mail test configuration: the helpers live in mail_helpers.py (plain module)."""

"""Celery app and tasks, the processing pipeline, IMAP pollers and the sweeper."""

"""The management and data HTTP API (FastAPI)."""

"""Domain operations over the database, shared by the HTTP API, the CLI and the pipeline.

Each function takes a keyword-only ``session`` and the calling ``Principal`` where access matters;
the rules of §3 live here, so every entry point enforces them the same way.
"""

"""The API served by a real uvicorn server in a thread, for what a TestClient cannot show.

A TestClient returns only when the whole ASGI call is over; a real client gets the answer as
soon as the server sends it — which is what a commit racing its own answer needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI


@contextmanager
def serve(app: FastAPI, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` on an ephemeral port; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not (server.started and server.servers):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{base}/healthz", timeout=timeout).status_code == 200
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout)

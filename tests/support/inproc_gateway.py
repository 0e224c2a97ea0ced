"""The SMTP gateway running in a background thread of the test process, on an ephemeral port.

Used where a test must inject something a separate process cannot take: a DNS function for
DKIM, a storage backend that is down, a clock for rate limits.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.smtp.app import build_gateway
from gateway.smtp.server import GatewayServer
from gateway.smtp.store import GroupCommitStore
from shared.config import Settings


class InProcessGateway:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        store_sessions: sessionmaker[Session] | None = None,
        **kw: Any,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.directory, self.store, self.enqueuer = build_gateway(
            settings, sessions, port=0, **kw
        )
        if store_sessions is not None:
            self.store.close()
            self.store = GroupCommitStore(store_sessions)
            self.server.handler.store = self.store
        self.port = self.call(self.server.start())

    @property
    def handler(self):  # type: ignore[no-untyped-def]
        return self.server.handler

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, drain_timeout: float = 5) -> None:
        self.call(self.server.drain_and_stop(drain_timeout))
        self.store.close()
        self.directory.close()
        if self.enqueuer is not None:
            self.enqueuer.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def server_of(gw: InProcessGateway) -> GatewayServer:
    return gw.server

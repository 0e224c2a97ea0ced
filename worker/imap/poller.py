"""The poller process: claims connections by lease and runs one sync thread per connection.

Several poller processes share the connections; a poller that dies stops renewing, and its
connections are taken over by another once the leases expire. One thread holds one IMAP
session per connection (one connection per mailbox), and the logins of the connections taken
in one scan — all of them after a restart — are staggered with jitter (§6 Provider-friendly).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import SecretBox
from worker.imap import leases
from worker.imap.backoff import login_delays
from worker.imap.session import ConnectionSync, PollerConfig

log = logging.getLogger("inboxlog.imap")


class Poller:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        box: SecretBox,
        *,
        on_stored: Callable[[list[int]], None],
        config: PollerConfig | None = None,
        lease_ttl: float = 30.0,
        scan_interval: float = 2.0,
        max_connections: int = 500,
        rng: random.Random | None = None,
        sync_factory: Callable[..., Any] = ConnectionSync,
    ) -> None:
        """``rng`` and ``sync_factory`` (the per-connection thread class) are for tests."""
        self.sessions, self.box, self.on_stored = sessions, box, on_stored
        self.config = config or PollerConfig()
        self.lease_ttl, self.scan_interval, self.max_connections = (
            lease_ttl,
            scan_interval,
            max_connections,
        )
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.threads: dict[int, ConnectionSync] = {}
        self.stopping = threading.Event()
        self.rng = rng or random.Random()
        self.sync_factory = sync_factory

    def scan(self) -> None:
        """One round: drop finished threads, renew our leases, claim what is free."""
        for cid, thread in list(self.threads.items()):
            if not thread.is_alive():
                del self.threads[cid]
                leases.release(self.sessions, cid, self.owner)
        held = leases.renew(self.sessions, list(self.threads), self.owner, self.lease_ttl)
        for cid in set(self.threads) - held:  # taken over (we were presumed dead): let go
            self.threads.pop(cid).stop()
        taken: list[int] = []
        for cid in leases.claimable(self.sessions, self.owner):
            if cid in self.threads or len(self.threads) + len(taken) >= self.max_connections:
                continue
            if leases.claim(self.sessions, cid, self.owner, self.lease_ttl):
                taken.append(cid)
        for cid, delay in zip(taken, login_delays(len(taken), self.rng), strict=True):
            thread = self.sync_factory(
                cid,
                sessions=self.sessions,
                box=self.box,
                owner=self.owner,
                config=self.config,
                on_stored=self.on_stored,
                start_delay=delay,
            )
            self.threads[cid] = thread
            thread.start()
            log.info("poller %s took connection %s", self.owner, cid)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.scan()
            except Exception as exc:  # database down: keep the threads, retry the scan
                log.warning("poller scan failed: %s", type(exc).__name__)
            self.stopping.wait(self.scan_interval)
        self.shutdown()

    def shutdown(self) -> None:
        for thread in self.threads.values():
            thread.stop()
        for cid, thread in self.threads.items():
            thread.join(10)
            with contextlib.suppress(Exception):  # best effort: the lease expires on its own
                leases.release(self.sessions, cid, self.owner)
        self.threads.clear()

    def stop(self) -> None:
        self.stopping.set()

"""The poller process: claims connections by lease and runs one sync thread per connection.

Several poller processes share the connections; a poller that dies stops renewing, and its
connections are taken over by another once the leases expire. One thread holds one IMAP
session per connection (one connection per mailbox), and the logins of the connections taken
in one scan — all of them after a restart — are staggered with jitter (§6 Provider-friendly).

An idle mailbox costs the database nothing of its own (§8): one query per scan reads every
connection this poller may hold with its control version, and only the threads whose version
moved re-read their row; leases and the idle connections' ``last_sync_at`` are renewed
together, in one transaction every third of the lease's life.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
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
        max_connections: int = 1000,
        rng: random.Random | None = None,
        sync_factory: Callable[..., Any] = ConnectionSync,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rng``, ``sync_factory`` (the per-connection thread class) and ``clock`` are for
        tests."""
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
        self.clock = clock
        self.renew_at = 0.0  # clock() reading when the leases are next renewed

    def scan(self) -> None:
        """One round: drop finished threads; read what we may hold (one query); let go of
        what is no longer ours; wake the threads whose settings moved; renew leases when due;
        claim what is free, up to ``max_connections``."""
        for cid, thread in list(self.threads.items()):
            if not thread.is_alive():
                del self.threads[cid]
                leases.release(self.sessions, cid, self.owner)
        seen = leases.claimable(self.sessions, self.owner)
        ours = {s.id: s.control_version for s in seen if s.ours}
        if self.clock() >= self.renew_at:
            in_sync = [cid for cid, t in self.threads.items() if t.in_sync]
            held = leases.renew(
                self.sessions, list(self.threads), self.owner, self.lease_ttl, in_sync=in_sync
            )
            ours = {cid: v for cid, v in ours.items() if cid in held}
            self.renew_at = self.clock() + self.lease_ttl / 3
        for cid in set(self.threads) - set(ours):
            # Deleted, stopped for a person, or taken over (we were presumed dead): let go.
            self.threads.pop(cid).stop()
        for cid, thread in self.threads.items():
            if ours[cid] != thread.control_version:
                thread.hint()  # a setting changed or a sync was requested: re-read the row
        taken: list[int] = []
        for s in seen:
            if s.id in self.threads or len(self.threads) + len(taken) >= self.max_connections:
                continue
            if leases.claim(self.sessions, s.id, self.owner, self.lease_ttl):
                taken.append(s.id)
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

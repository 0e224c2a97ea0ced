"""Taking work off a thread queue in batches: what the gateway's group commit and the
enqueuer both do. ``None`` on the queue means "close". Their queues are ``SimpleQueue``s: a put
from the event loop, once per message, runs in C without a Python lock and condition."""

from __future__ import annotations

import queue
import time
from typing import TypeVar

T = TypeVar("T")


def take_batch(
    q: queue.SimpleQueue[T | None] | queue.Queue[T | None],
    limit: int,
    *,
    linger: float = 0.0,
    linger_limit: int = 0,
) -> list[T] | None:
    """Block for one item, then take what is waiting, up to ``limit``; while fewer than
    ``linger_limit`` are in hand, wait up to ``linger`` seconds for more. None once closed
    (the sentinel is put back, so a batch in hand is still returned first)."""
    first = q.get()
    if first is None:
        return None
    batch = [first]
    deadline = time.monotonic() + linger
    while len(batch) < limit:
        try:
            if len(batch) < linger_limit:
                nxt = q.get(timeout=max(0.0, deadline - time.monotonic()))
            else:
                nxt = q.get_nowait()
        except queue.Empty:
            break
        if nxt is None:
            q.put(None)
            break
        batch.append(nxt)
    return batch

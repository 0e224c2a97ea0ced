"""take_batch: what the group commit and the enqueuer take off their queues."""

from __future__ import annotations

import queue
import threading
import time

from shared.batching import take_batch


def test_takes_what_is_waiting_up_to_the_limit_and_honours_close() -> None:
    q: queue.Queue[int | None] = queue.Queue()
    for i in range(5):
        q.put(i)
    q.put(None)
    assert take_batch(q, 3) == [0, 1, 2]
    assert take_batch(q, 10) == [3, 4]  # the close marker stays for the next call
    assert take_batch(q, 10) is None


def test_lingers_for_a_trickle_but_not_past_the_deadline() -> None:
    q: queue.Queue[int | None] = queue.Queue()
    q.put(1)
    threading.Timer(0.05, q.put, args=(2,)).start()
    t0 = time.monotonic()
    assert take_batch(q, 10, linger=0.3, linger_limit=2) == [1, 2]
    assert time.monotonic() - t0 < 0.25  # enough items: no further waiting
    q.put(3)
    t0 = time.monotonic()
    assert take_batch(q, 10, linger=0.1, linger_limit=5) == [3]
    assert 0.08 < time.monotonic() - t0 < 1.0

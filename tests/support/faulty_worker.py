"""``inboxlog`` with faults injected into pipeline stages, for tests that need a message that is
slow, that hangs in C code, or that kills its worker — and a real worker around it.

Run as ``python -m tests.support.faulty_worker worker ...`` with ``INBOXLOG_TEST_FAULTS`` set to a
JSON list of ``{"stage": name, "marker": text, "action": ..., "seconds": n}``: a message whose
raw bytes contain ``marker`` meets ``action`` when it reaches ``stage``:

- ``sleep``: Python sleeps ``seconds`` (a soft time limit interrupts it);
- ``spin``: a catastrophic regular expression in C code that ignores signals (only the hard time
  limit, which kills the process, ends it);
- ``kill``: the worker process SIGKILLs itself;
- ``hold``: creates the file ``entered``, then waits until the file ``release`` exists (at most
  ``seconds``): the test, not a clock, decides how long the stage stays stopped.

With ``"once": path`` a fault acts only for the first process to create ``path`` (atomically,
across processes): a replacement worker started with the same faults processes the message.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import Any

from worker.pipeline import driver
from worker.pipeline.job import Batch, Job


def _act(fault: dict[str, Any]) -> None:
    if once := fault.get("once"):
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    action = fault["action"]
    if action == "sleep":
        deadline = time.monotonic() + float(fault.get("seconds", 3600))
        while time.monotonic() < deadline:
            time.sleep(0.05)
    elif action == "spin":
        re.match(r"(a+)+$", "a" * 40 + "!")  # exponential backtracking, holds the GIL
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hold":
        with open(fault["entered"], "w"):
            pass
        deadline = time.monotonic() + float(fault.get("seconds", 3600))
        while time.monotonic() < deadline and not os.path.exists(fault["release"]):
            time.sleep(0.05)


def _wrap(stage: driver.Stage, faults: list[dict[str, Any]]) -> driver.Stage:
    mine = [f for f in faults if f["stage"] == stage.name]
    if not mine:
        return stage
    if stage.per_message is not None:
        inner_m = stage.per_message

        def per_message(job: Job, batch: Batch) -> None:
            for f in mine:
                if f["marker"].encode() in job.raw:
                    _act(f)
            inner_m(job, batch)

        return driver.Stage(stage.name, per_message=per_message, txn=stage.txn)
    inner_b = stage.per_batch
    assert inner_b is not None

    def per_batch(batch: Batch) -> None:
        for f in mine:
            if any(f["marker"].encode() in j.raw for j in batch.live):
                _act(f)
        inner_b(batch)

    return driver.Stage(stage.name, per_batch=per_batch, txn=stage.txn)


def install(faults: list[dict[str, Any]]) -> None:
    driver.PIPELINE = tuple(_wrap(s, faults) for s in driver.PIPELINE)


if __name__ == "__main__":
    install(json.loads(os.environ.get("INBOXLOG_TEST_FAULTS", "[]")))
    from inboxlog.cli import main

    main()

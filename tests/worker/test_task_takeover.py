"""The task a hard time limit killed is put back on the queue by the worker's main process, and
the new task is told to take over the dead one's claims — and those the dead one was itself
taking over — so its rows are processed at once, not after the sweeper's threshold."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.exceptions import TimeLimitExceeded

import worker.tasks as tasks
from shared.queueing import TASK_PROCESS
from tests.conftest import make_settings
from worker.celery_app import create_celery


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Celery:
    """One app for the module: Celery registers a task name once per process."""
    tmp = tmp_path_factory.mktemp("celery")
    return create_celery(make_settings(f"sqlite:///{tmp}/t.db", tmp))


def _requeued(
    app: Celery, monkeypatch: pytest.MonkeyPatch, exc: BaseException, args: Any, kwargs: Any
) -> list[tuple[list[int], dict[str, Any]]]:
    sent: list[tuple[list[int], dict[str, Any]]] = []
    monkeypatch.setattr(tasks, "requeue", lambda app, ids, options: sent.append((ids, options)))
    app.tasks[TASK_PROCESS].on_failure(exc, "killed-task", args, kwargs, None)
    return sent


def test_a_batch_killed_by_the_hard_limit_is_requeued_to_take_over_its_claims(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _requeued(app, monkeypatch, TimeLimitExceeded(8), ([4, 5, 6],), {})
    assert sent == [([4, 5, 6], {"timed_out": [], "takeover": ["killed-task"]})]


def test_a_killed_takeover_task_passes_on_what_it_was_taking_over(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _requeued(app, monkeypatch, TimeLimitExceeded(8), ([7],), {"takeover": ["first-task"]})
    assert sent == [([7], {"timed_out": [7], "takeover": ["killed-task", "first-task"]})]


def test_other_failures_are_not_requeued_here(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _requeued(app, monkeypatch, RuntimeError("x"), ([1],), {}) == []

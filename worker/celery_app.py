"""The Celery application: configuration from the settings and the task registrations."""

from __future__ import annotations

from celery import Celery

from shared.config import Settings
from shared.queueing import celery_config
from worker.tasks import register_tasks


def create_celery(settings: Settings) -> Celery:
    app = Celery("inboxlog")
    app.conf.update(celery_config(settings))
    register_tasks(app, settings)
    return app

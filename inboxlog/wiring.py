"""Wires the runtime into the HTTP app (the API never builds its own settings)."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.api.context import ApiContext
from inboxlog.runtime import Runtime
from shared.queueing import TaskSender


def build_app(rt: Runtime) -> FastAPI:
    sender = TaskSender(rt.settings)
    return create_app(
        ApiContext(
            settings=rt.settings,
            sessions=rt.sessions,
            box=rt.box,
            extras={"task_sender": sender, "broker_probe": sender.ping},
        )
    )

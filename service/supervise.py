"""Background tasks never die silently: an unexpected exception ends the process (with a
non-zero exit and a log line) so that the orchestrator restarts it, instead of leaving a service
that answers health checks while its consumer or claimer is dead."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger(__name__)


class Fatal:
    """Set once by the first background task that fails; `serve` waits on it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None

    def watch(self, task: asyncio.Task[object]) -> None:
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.critical("task.crashed", task=task.get_name(), error=repr(exc), exc_info=exc)
        if self.reason is None:
            self.reason = f"{task.get_name()}: {exc!r}"
        self.event.set()

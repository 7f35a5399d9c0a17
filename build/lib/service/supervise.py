"""Background tasks never die silently: an unexpected exception ends the process (with a
non-zero exit and a log line) so that the orchestrator restarts it, instead of leaving a service
that answers health checks while its consumer or claimer is dead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

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


@contextlib.asynccontextmanager
async def in_background(
    work: Coroutine[Any, Any, None], name: str, fatal: Fatal | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """Runs `work` as a task for as long as the block lasts (STYLE lesson 2), then cancels it
    and waits for it. With `fatal`, a crash of the task ends the process; without, it is raised
    when the block ends. Never left unobserved either way."""
    task = asyncio.create_task(work, name=name)
    if fatal is not None:
        fatal.watch(task)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

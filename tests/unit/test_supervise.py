"""A background task that crashes ends the service instead of dying silently."""

from __future__ import annotations

import asyncio

from service.supervise import Fatal


async def test_a_crashed_task_sets_the_fatal_event_once() -> None:
    fatal = Fatal()

    async def boom() -> None:
        raise RuntimeError("bug")

    async def fine() -> None:
        return None

    async def forever() -> None:
        await asyncio.Event().wait()

    cancelled = asyncio.create_task(forever(), name="cancelled")
    for task in (asyncio.create_task(fine(), name="fine"), cancelled):
        fatal.watch(task)
    cancelled.cancel()
    await asyncio.sleep(0.01)
    assert not fatal.event.is_set()

    crashing = asyncio.create_task(boom(), name="claimer")
    fatal.watch(crashing)
    await asyncio.wait_for(fatal.event.wait(), 5)
    assert fatal.reason == "claimer: RuntimeError('bug')"

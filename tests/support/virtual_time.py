"""An event loop whose clock runs ahead whenever it would only wait for a timer: a test of
timeouts and pauses runs in a fraction of the time and sees the same order of events.

Real input (sockets, the store's worker thread handing results back) gets a moment of real time
before each step, and a step is at most `MAX_STEP_S`: the clock runs at most MAX_STEP_S /
SETTLE_S (25) times faster than real time, so work on another thread that takes a few
milliseconds still ends long before a deadline of a second. `time.time()` is untouched, so
whatever reads the wall clock (a database's lease clock) still sees real time. Inject the loop's
clock (`loop.time`) where a test compares times.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Real time given to sockets and threads before each step of the clock, and the longest step.
SETTLE_S = 0.002
MAX_STEP_S = 0.05


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, advance: Callable[[float], None]) -> None:
        super().__init__()
        self._advance = advance

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= SETTLE_S:
            return super().select(timeout)
        ready = super().select(SETTLE_S)
        if not ready:
            self._advance(min(timeout - SETTLE_S, MAX_STEP_S))
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose `time()` is the real monotonic clock plus the time it skipped."""

    def __init__(self) -> None:
        self._skipped = 0.0
        super().__init__(_JumpingSelector(self._skip))

    def _skip(self, seconds: float) -> None:
        self._skipped += seconds

    def time(self) -> float:
        return super().time() + self._skipped


def in_virtual_time(
    test: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, T]:
    """Runs an async test on a fresh `VirtualTimeLoop` of its own (a plain function to pytest,
    which still passes it the fixtures it names)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        loop = VirtualTimeLoop()
        try:
            return loop.run_until_complete(test(*args, **kwargs))
        finally:
            try:
                _cancel_what_is_left(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    return run


def _cancel_what_is_left(loop: asyncio.AbstractEventLoop) -> None:
    """Cancels the tasks a test left running, and those their cancellation starts (a lane whose
    attempt ends starts its next), until none is left: none is destroyed pending, to be
    reported in a later test."""
    for _ in range(1000):
        left = asyncio.all_tasks(loop)
        if not left:
            return
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    raise RuntimeError("tasks kept starting others after the test ended")

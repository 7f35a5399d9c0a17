"""`python -m bench.stallwatch serve …`: `python -m service serve …` with a ticker in its event
loop, for benches that must show how long something held the loop in the real service.

The ticker wakes every 2 ms; each wake-up later than 5 ms past its time is a stall, appended as
`<epoch seconds> <ms late> <where>` to the file `$BENCH_STALLS.<pid>` once a second. `<where>`
says what held the loop: a watchdog thread, seeing no wake-up for 10 ms, takes the loop
thread's stack then, and keeps its innermost frames of `service/` (`file:function`, innermost
first, joined by `<`; `-` when it saw none). The bench reads those lines for the windows it
cares about. Nothing of this is in the service's image.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from types import FrameType

from service.cli import main

TICK = 0.002
NOTED = 0.005  # later than this is written down
WATCHED = 0.010  # no wake-up for this long: the watchdog looks at the loop thread's stack


class _Watchdog:
    """A thread that notes where the loop's thread is when its ticker has been silent."""

    def __init__(self, loop_thread: int) -> None:
        self.beat = time.monotonic()
        self.where = "-"
        self._loop_thread = loop_thread
        threading.Thread(target=self._watch, name="stallwatch", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(0.003)
            beat = self.beat
            if time.monotonic() - beat > WATCHED and self.where == "-":
                frame = sys._current_frames().get(self._loop_thread)
                self.where = _where(frame)

    def reset(self) -> str:
        where, self.where = self.where, "-"
        self.beat = time.monotonic()
        return where


def _where(frame: FrameType | None) -> str:
    found: list[str] = []
    while frame is not None and len(found) < 4:
        path = frame.f_code.co_filename
        if "/service/" in path:
            found.append(f"{path.rsplit('/service/', 1)[1]}:{frame.f_code.co_name}")
        frame = frame.f_back
    return "<".join(found) or "-"


async def _tick(path: str) -> None:
    noted: list[str] = []
    flushed = time.monotonic()
    watchdog = _Watchdog(threading.get_ident())
    while True:
        before = time.monotonic()
        await asyncio.sleep(TICK)
        now = time.monotonic()
        where = watchdog.reset()
        late = now - before - TICK
        if late > NOTED:
            noted.append(f"{time.time() - late:.3f} {late * 1000:.1f} {where}\n")
        if now - flushed >= 1.0:
            flushed = now
            if noted:
                await asyncio.to_thread(_append, path, noted[:])
                noted.clear()


def _append(path: str, lines: list[str]) -> None:
    with open(path, "a") as out:
        out.writelines(lines)


class _Policy(asyncio.DefaultEventLoopPolicy):
    """Every new loop (the service's `asyncio.run`) starts the ticker as its first task."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path
        self._tasks: set[asyncio.Task[None]] = set()

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.call_soon(lambda: self._tasks.add(loop.create_task(_tick(self._path))))
        return loop


if __name__ == "__main__":
    asyncio.set_event_loop_policy(_Policy(f"{os.environ['BENCH_STALLS']}.{os.getpid()}"))
    sys.exit(main(sys.argv[1:]))

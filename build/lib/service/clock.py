"""The wall clock, in the epoch milliseconds the store and the records keep.

One function, so that every place that stamps a time reads the same clock (and a test can see
where times come from)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)

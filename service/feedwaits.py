"""Long polls waiting on polling subscriptions' feeds: whoever records deliveries into a feed in
this process (ingest, `/test`) tells of them, and a waiting read wakes at once. A delivery
another replica records is found by the read itself, which looks at the store again at least
every `RECHECK` seconds while it waits (docs/decisions/0014-polling-and-listen.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

RECHECK = 1.0
"""Seconds a waiting read sleeps at most between two reads of the store."""


class FeedWaits:
    """The waiting reads of this process, by subscription."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    def notify(self, subscription_ids: Iterable[str]) -> None:
        """These feeds have new deliveries: wake whoever waits on them."""
        for subscription_id in set(subscription_ids):
            for waiter in self._waiting.pop(subscription_id, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def wait(self, subscription_id: str, timeout: float) -> None:
        """Returns when the feed is told of new deliveries, or after `timeout` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(subscription_id, set())
        waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiting.get(subscription_id) is waiters:
                del self._waiting[subscription_id]

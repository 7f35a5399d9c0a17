"""Fenced leases in the claimer: a delivery the last renewal found taken by another replica, or
whose lease may have run out because renewals failed, is no longer this process's to send."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import cast

from service.delivery.claimer import Claimer
from service.delivery.lane import Lane, Lanes
from service.delivery.recorder import Recorder
from service.domain import DeliveryJob
from service.metrics import Metrics
from service.store import Store, StoreUnavailable
from tests.support.virtual_time import in_virtual_time

LEASE = 0.3


def job(n: int) -> DeliveryJob:
    return DeliveryJob(f"whd_{n}", "whk_1", f"evt_{n}", "verification.created", b"{}", None, 0, 0)


class RenewingStore:
    """Renews what it is asked except what another replica took; can go away."""

    def __init__(self) -> None:
        self.taken_by_another: set[str] = set()
        self.away = False

    async def renew(self, delivery_ids: Sequence[str], owner: str, lease_ms: int) -> set[str]:
        if self.away:
            raise StoreUnavailable("connection refused")
        return set(delivery_ids) - self.taken_by_another

    async def claim_due(self, *args: object, **kwargs: object) -> list[DeliveryJob]:
        return []


@in_virtual_time
async def test_only_what_this_replica_surely_holds_is_sent() -> None:
    store = RenewingStore()
    blocked = asyncio.Event()

    async def never_done(_: DeliveryJob) -> bool:
        await blocked.wait()
        return True

    lanes = Lanes(lambda sid: Lane(sid, 1, 10, never_done, lambda: None))
    metrics = Metrics()
    claimer = Claimer(
        store=cast(Store, store),
        lanes=lanes,
        recorder=Recorder(cast(Store, store), metrics, "me"),
        submit=lambda jobs: None,
        parked=lambda: (),
        metrics=metrics,
        owner="me",
        lease=LEASE,
        poll_interval=0.02,
    )
    loop = asyncio.get_running_loop()
    lane = lanes.open("whk_1")
    for n in range(3):  # one in flight, two queued: all held
        lane.offer(job(n))
    taken = loop.time()
    store.taken_by_another = {"whd_2"}
    task = asyncio.create_task(claimer.run())
    try:
        await asyncio.sleep(LEASE)  # past several renewals, and past the first lease
        assert claimer.holds("whd_1", taken)
        assert not claimer.holds("whd_2", taken)  # another replica has it
        # The store goes away: no renewal can be confirmed, and once the lease may have run
        # out nothing this process held is sent any more.
        store.away = True
        await asyncio.sleep(LEASE)
        assert not claimer.holds("whd_1", taken)
        assert not claimer.holds("whd_1", loop.time() - LEASE)
        # A delivery leased a moment ago is still surely ours.
        assert claimer.holds("whd_9", loop.time())
    finally:
        blocked.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""How lanes share the connection budget: a reserve for lanes that hold none, turns for the
rest, and no slot lost to an attempt cancelled before it ran."""

from __future__ import annotations

import asyncio

from service.delivery.lane import ConnectionBudget, Lane
from service.domain import DeliveryJob


def job(n: int) -> DeliveryJob:
    return DeliveryJob(f"whd_{n}", "whk", f"evt_{n}", "verification.created", b"{}", None, 0, 0)


class Endpoint:
    """Holds every request until `release`; counts what is in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.gate = asyncio.Event()

    async def run(self, _: DeliveryJob) -> bool:
        self.in_flight += 1
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return True


def lane(name: str, budget: ConnectionBudget, endpoint: Endpoint, jobs: int) -> Lane:
    opened = Lane(name, 10, 100, endpoint.run, lambda: None, budget=budget)
    for n in range(jobs):
        opened.offer(job(hash((name, n))))
    return opened


async def settle() -> None:
    await asyncio.sleep(0.01)


async def test_slow_lanes_leave_the_reserve_to_lanes_that_hold_no_connection() -> None:
    budget = ConnectionBudget(8)  # a reserve of 2
    slow1, slow2, healthy = Endpoint(), Endpoint(), Endpoint()
    lane("slow1", budget, slow1, 20)
    await settle()
    assert slow1.in_flight == 6  # all but the reserve
    lane("slow2", budget, slow2, 20)
    lane("healthy", budget, healthy, 5)
    await settle()
    # Each took its first connection from the reserve, and no more.
    assert (slow2.in_flight, healthy.in_flight) == (1, 1)
    assert budget.free == 0
    late = Endpoint()
    lane("late", budget, late, 5)
    assert budget.lanes_waiting == 4  # slow1, slow2 and healthy for more; late for its first
    slow1.gate.set()
    await settle()
    assert late.in_flight >= 1  # freed connections go to the lane holding none first
    for endpoint in (slow2, healthy, late):
        endpoint.gate.set()
    await settle()
    assert budget.free == 8
    assert budget.lanes_waiting == 0


async def test_freed_connections_go_to_lanes_holding_none_first_then_in_turn() -> None:
    budget = ConnectionBudget(4)  # a reserve of 1
    first = Endpoint()
    lane("a", budget, first, 10)  # takes 3
    waiting = Endpoint()
    lane("b", budget, waiting, 10)  # its first, from the reserve
    lane("c", budget, waiting, 10)  # none left: waits for its first
    await settle()
    assert (first.in_flight, waiting.in_flight) == (3, 1)
    first.gate.set()  # a's attempts now end at once: c gets its first, then all take turns
    await settle()
    assert first.in_flight == 0
    assert waiting.in_flight == 3  # b and c hold all but the reserve, which stays free
    assert budget.free == 1
    waiting.gate.set()
    await settle()
    assert budget.free == 4


async def test_an_attempt_cancelled_before_it_ran_gives_its_slot_back() -> None:
    budget = ConnectionBudget(4)
    endpoint = Endpoint()
    opened = lane("a", budget, endpoint, 2)
    assert budget.in_use == 2
    for task in list(opened.tasks):
        task.cancel()  # before the loop ever ran it: its `finally` never runs
    await settle()
    assert budget.in_use == 0

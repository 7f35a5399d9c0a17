"""The store-wide counts housekeeping takes on a timer read a bounded part of the store
(docs/decisions/0018-store-wide-counts-at-scale.md): the rolling census of sealed values, and
the pending gauge. Against fakes of the store's reads."""

from __future__ import annotations

from typing import cast

from service.delivery.census import RollingCensus
from service.delivery.housekeeping import PendingGauge
from service.store import Pipeline, SealedCensus


def _current(n: int) -> SealedCensus:
    return SealedCensus(n, 0, 0, 0)


class FakeBuckets:
    """Tallies by table and bucket, and the ranges read."""

    def __init__(self, events: dict[int, SealedCensus]) -> None:
        self.tables: dict[str, dict[int, SealedCensus]] = {"events": events, "attempts": {}}
        self.settings = _current(2)
        self.reads: list[tuple[str, int | None, int | None]] = []

    async def sealed_buckets(
        self, table: str, first: int | None = None, end: int | None = None
    ) -> dict[int, SealedCensus]:
        self.reads.append((table, first, end))
        return {
            b: tally
            for b, tally in self.tables[table].items()
            if (first is None or b >= first) and (end is None or b < end)
        }

    async def sealed_settings(self) -> SealedCensus:
        return self.settings

    def truth(self) -> SealedCensus:
        census = self.settings
        for buckets in self.tables.values():
            for tally in buckets.values():
                census = census.plus(tally)
        return census


async def test_the_first_pass_counts_everything_then_the_newest_and_a_budget() -> None:
    store = FakeBuckets({b: _current(10) for b in range(100, 110)})
    census = RollingCensus(store, budget=25)
    assert await census.take() == _current(102)
    assert store.reads == [("events", None, None), ("attempts", None, None)]

    # New rows in the newest bucket and a newer one, and a bucket an older key sealed: they
    # are read at once; the budget takes the older bucket first, then the longest uncounted.
    store.tables["events"][109] = _current(15)
    store.tables["events"][110] = _current(5)
    store.tables["events"][104] = SealedCensus(0, 10, 0, 0)
    store.reads.clear()
    first = await census.take()
    assert census.last_read["events"] == [100, 101]  # 20 rows of the 25; a third would pass
    assert first == _current(112)  # the older key's bucket is not seen yet: not its turn
    store.reads.clear()
    second = await census.take()
    assert store.reads[0] == ("events", 110, None)
    assert census.last_read["events"] == [102, 103]
    assert (await census.take()).older == 10  # 104's turn
    # Once found, the older key's bucket is read every pass, before the others, until `rekey`
    # seals it again.
    assert (await census.take()).older == 10
    assert census.last_read["events"][0] == 104
    store.tables["events"][104] = _current(10)
    assert (await census.take()).older == 0
    assert second.older == 0


async def test_removals_reach_the_census_within_a_sweep() -> None:
    store = FakeBuckets({b: _current(10) for b in range(20)})
    census = RollingCensus(store, budget=30)
    await census.take()
    for gone in range(5):  # retention removes the oldest
        del store.tables["events"][gone]
    store.tables["events"][7] = _current(4)  # an erasure emptied some
    passes = 0
    while await census.take() != store.truth():
        passes += 1
        assert passes < 8, "a sweep of 19 older buckets, three a pass"
    assert 0 not in census.last_read["events"]


async def test_at_least_one_older_bucket_a_pass_whatever_the_budget() -> None:
    store = FakeBuckets({1: _current(1_000), 2: _current(1_000), 3: _current(1)})
    census = RollingCensus(store, budget=10)
    await census.take()
    await census.take()
    assert census.last_read["events"] == [1]


class FakePending:
    def __init__(self, open_deliveries: int, estimate: int | None) -> None:
        self.open = open_deliveries
        self.estimate = estimate
        self.full_counts = 0

    async def pending_at_most(self, cap: int) -> int:
        return min(self.open, cap)

    async def pending_estimate(self) -> int | None:
        return self.estimate

    async def pending_count(self) -> int:
        self.full_counts += 1
        return self.open


async def test_the_pending_gauge_is_exact_below_its_cap() -> None:
    store = FakePending(9, estimate=500)
    gauge = PendingGauge(cast(Pipeline, store), cap=10)
    assert await gauge.read() == 9
    assert store.full_counts == 0


async def test_above_its_cap_the_pending_gauge_takes_the_planners_estimate() -> None:
    store = FakePending(1_000, estimate=930)
    gauge = PendingGauge(cast(Pipeline, store), cap=10)
    assert await gauge.read() == 930
    store.estimate = 3  # statistics older than the backlog: never shown below what was counted
    assert await gauge.read() == 10
    assert store.full_counts == 0


async def test_without_an_estimate_a_full_count_is_spread_over_its_size() -> None:
    store = FakePending(35, estimate=None)
    gauge = PendingGauge(cast(Pipeline, store), cap=10)
    readings = [await gauge.read() for _ in range(8)]
    assert readings == [35] * 8
    assert store.full_counts == 2  # once every ceil(35 / 10) = 4 readings
    store.open = 4
    assert await gauge.read() == 4  # below the cap: exact again at once

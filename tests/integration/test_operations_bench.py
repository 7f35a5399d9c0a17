"""The operations bench (bench/operations.py) measures what it seeded: on both stores, its
seeding through the store's write path and what health and the log read back agree, by value.
(The bench's timings are figures in its report, never asserted.)"""

from __future__ import annotations

from bench.operations import Seeded, SeedPlan, SimulatedClock, seed
from service.domain import DeliveryFilter, DeliveryLogRow, DeliveryStatus
from service.store import PageRequest, Store
from service.summaries import HOUR_MS

PLAN = SeedPlan(
    deliveries=600, subscriptions=4, batch=100, ingest_batch=40, open_tail=25, span_ms=48 * HOUR_MS
)


async def _log(store: Store, seeded: Seeded, where: DeliveryFilter) -> list[DeliveryLogRow]:
    rows: list[DeliveryLogRow] = []
    after = None
    while True:
        page = await store.list_deliveries(seeded.org, seeded.big, where, PageRequest(50, after))
        rows += page.rows
        if page.next_after is None:
            return rows
        after = page.next_after


async def test_seeding_and_summaries_agree(store: Store) -> None:
    seeded = await seed(store, PLAN, org="org_ops")
    assert sum(seeded.created.values()) == PLAN.deliveries
    assert seeded.created[seeded.big] > PLAN.deliveries * 0.8
    clock = SimulatedClock()
    clock.at = seeded.now  # the 24 h window as the seeding saw it, whatever the wall clock does
    with clock.installed():
        summary = await store.subscription_summaries(seeded.subscription_ids)
    for sid in seeded.subscription_ids:
        expected = seeded.expected_summary(sid, seeded.now)
        got = summary[sid]
        assert got.delivery_count == expected["delivery_count"] == seeded.created[sid]
        assert got.attempts_24h == expected["attempts_24h"]
        assert got.ok_24h == expected["ok_24h"]
        assert got.pending_count == expected["pending_count"]
        assert got.next_retry_at == expected["next_retry_at"]
    big = summary[seeded.big]
    # Half the 48 h are older than the window: their attempts are not in the 24 h figures.
    everything = len(seeded.attempts[seeded.big])
    assert 0 < big.attempts_24h < everything * 0.75
    assert 0 < big.ok_24h < big.attempts_24h
    assert big.p95_latency_ms_24h is not None
    assert big.pending_count >= PLAN.open_tail * 0.5
    assert big.next_retry_at is not None

    log = await _log(store, seeded, DeliveryFilter())
    assert len(log) == seeded.created[seeded.big]
    # Newest first by (createdAt, id) across pages, ties within an ingest batch included.
    keys = [(row.created_at, row.id) for row in log]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == len(keys)
    assert {row.id: row.status.value for row in log} == {
        d: s for d, s in seeded.status.items() if seeded.subscription_of[d] == seeded.big
    }
    assert big.last_delivery is not None
    assert big.last_delivery.status is log[0].status
    failed = await _log(store, seeded, DeliveryFilter(status=DeliveryStatus.FAILED))
    assert len(failed) == seeded.statuses(seeded.big)["failed"] > 0
    kyc = await _log(store, seeded, DeliveryFilter(event="customer.kyc_updated"))
    assert {row.id for row in kyc} == {
        d
        for d, event in seeded.event_of.items()
        if event == "customer.kyc_updated" and seeded.subscription_of[d] == seeded.big
    }

    detail = await store.get_delivery(
        seeded.org, seeded.subscription_of[seeded.most_attempted], seeded.most_attempted
    )
    assert detail is not None
    assert [a.number for a in detail.attempts] == [1, 2, 3]

"""Retention on both stores: what is past `WEBHOOKS_RETENTION` goes in small batches (one short
transaction each), open deliveries and what they need stay, and the hourly counters of before
the retention go too."""

from __future__ import annotations

import asyncio

import pytest

from service import ids
from service.clock import now_ms
from service.delivery.housekeeping import Housekeeping
from service.domain import (
    DeliveryFilter,
    DeliveryStatus,
    NewDelivery,
    PayloadRemoval,
    Redelivery,
)
from service.metrics import Metrics
from service.store import Claim, Lease, PageRequest, PurgeCursor, Purged, Store
from tests.support.store import EVENTS, attempt, incoming

DAY = 86_400_000


async def test_retention_purges_in_batches_and_keeps_what_is_open(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    events = [incoming() for _ in range(7)]
    deliveries = [NewDelivery(ids.new_id("whd"), e.id, sub.id, e.event, e.org_id) for e in events]
    await store.record_events(events, deliveries, Lease("me", 60_000))
    # Five finished two days ago, one finished now, one still open.
    old = now_ms() - 2 * DAY
    await store.record_attempts(
        [attempt(d, 1, DeliveryStatus.SENT, 200, old) for d in deliveries[:5]]
        + [attempt(deliveries[5], 1, DeliveryStatus.FAILED, 500, now_ms())],
        "me",
    )
    transactions: list[int] = []
    purge = store.purge

    async def counted(finished_before: int, batch: int, after: PurgeCursor | None = None) -> Purged:
        step = await purge(finished_before, batch, after)
        transactions.append(step.removed)
        return step

    monkeypatch.setattr(store, "purge", counted)
    housekeeping = Housekeeping(store, Metrics(), retention=DAY / 1000, purge_batch=2)
    removed = await housekeeping.purge()

    # The five old deliveries (their attempts go with them) and the two counters of their
    # hour ("ok" and one latency bucket); the events were received now, so they stay.
    assert removed == 7
    assert len(transactions) >= 3
    assert max(transactions) <= 2 * 3
    assert transactions[-1] < 2 * 3
    left = await store.list_deliveries("org_a", sub.id, DeliveryFilter(), PageRequest(100, None))
    assert {row.id for row in left.rows} == {deliveries[5].id, deliveries[6].id}
    assert (await store.get_delivery("org_a", sub.id, deliveries[6].id)) is not None
    assert await housekeeping.purge() == 0  # nothing left past the retention
    summary = (await store.subscription_summaries([sub.id]))[sub.id]
    # The 2-day-old attempts' counters went with the retention; today's stay.
    assert summary.attempts_24h == 1


async def test_payload_retention_removes_payloads_but_not_what_open_deliveries_need(
    store: Store,
) -> None:
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    events = [incoming() for _ in range(3)]
    sent, failed, open_ = (
        NewDelivery(ids.new_id("whd"), e.id, sub.id, e.event, e.org_id) for e in events
    )
    await store.record_events(events, [sent, failed, open_], Lease("me", 60_000))
    await store.record_attempts(
        [
            attempt(sent, 1, DeliveryStatus.SENT, 200, now_ms()),
            attempt(failed, 1, DeliveryStatus.FAILED, 500, now_ms()),
            attempt(open_, 1, DeliveryStatus.RETRYING, 500, now_ms()),
        ],
        "me",
    )
    await asyncio.sleep(0.01)  # received before the cutoff, to the millisecond
    housekeeping = Housekeeping(
        store, Metrics(), retention=DAY / 1000, payload_retention=0, purge_batch=1
    )

    # Two bodies and two excerpts, one per transaction; the open delivery keeps both.
    assert await housekeeping.expunge() == 4
    for finished in (sent, failed):
        entry = await store.get_delivery("org_a", sub.id, finished.id)
        assert entry is not None
        assert entry.payload is None
        assert entry.gone is not None
        assert entry.gone.reason is PayloadRemoval.EXPIRED
        assert [a.response_excerpt for a in entry.attempts] == [None]
        assert entry.row.status in (DeliveryStatus.SENT, DeliveryStatus.FAILED)  # metadata kept
        assert await store.redeliver("org_a", sub.id, finished.id) is Redelivery.PAYLOAD_GONE
    kept = await store.get_delivery("org_a", sub.id, open_.id)
    assert kept is not None
    assert kept.payload == b'{"id":"x"}'
    assert kept.gone is None
    assert [a.response_excerpt for a in kept.attempts] == ["ok"]
    assert await housekeeping.expunge() == 0

    # Once it ends, its payload goes at the next pass.
    await store.redeliver("org_a", sub.id, open_.id)
    (job,) = await store.claim_due(Claim("me", 10, 60_000, subscription_id=sub.id))
    assert job.body == b'{"id":"x"}'
    await store.record_attempts([attempt(open_, 2, DeliveryStatus.SENT, 200, now_ms())], "me")
    assert await housekeeping.expunge() == 3  # its body and both excerpts
    ended = await store.get_delivery("org_a", sub.id, open_.id)
    assert ended is not None
    assert ended.payload is None

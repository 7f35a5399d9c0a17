"""Ordered delivery end to end: the real service as child processes, real Kafka, both
stores, the shared receiver.

Interleaved events of many customers go to one subscription with `ordering: "customer"`; the
receiver fails some requests at random (seeded), fails one customer outright until every other
customer is through, and the service is SIGKILLed in the middle and started again (on PostgreSQL
also as two replicas sharing the work). The receiver's log then shows, per customer:

- order: no event is first attempted before the previous event's first 2xx (so first arrivals
  are in the produce order; a re-send after the kill may come later, as at-least-once allows);
- one at a time: never two requests about one customer in flight at once;
- isolation: every other customer was through while the failing one was still held up, with
  only its head attempted meanwhile.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from service.domain import DeliveryFilter, DeliveryStatus, Ordering
from service.samples import sample_event
from service.settings import Settings
from service.store import PageRequest, open_store
from tests.support.process import ServiceProcess, service_env, service_settings
from tools.receiver import Behaviour, Received, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ORG = "org_ordered"
PATH = "ordered"
CUSTOMERS = [f"cus_o{i:02d}" for i in range(30)]
PER_CUSTOMER = 10
BLOCKED = CUSTOMERS[7]  # answered 503 until every other customer is through
FAILURE_RATE = 0.15  # of the other customers' requests, answered 500
# Quick retries, and enough of them (about a minute) that no delivery finally fails here.
RETRIES = ",".join(["200ms", "300ms", "500ms"] + ["1s"] * 60)


async def produce(bootstrap: str, topic: str) -> dict[str, list[str]]:
    """PER_CUSTOMER rounds over every customer, keyed by customer id: per customer, the event ids
    in the order produced (one partition each, so Kafka keeps that order)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    produced: dict[str, list[str]] = {c: [] for c in CUSTOMERS}
    try:
        for _ in range(PER_CUSTOMER):
            for customer in CUSTOMERS:
                event = sample_event("verification.created", ORG, datetime.now(UTC))
                event["data"]["customerId"] = customer
                produced[customer].append(event["id"])
                await producer.send(topic, orjson.dumps(event), key=customer.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return produced


def firsts(requests: Sequence[Received]) -> tuple[dict[str, int], dict[str, int]]:
    """Per event id, the index of its first request, and of its first 2xx answer."""
    first_any: dict[str, int] = {}
    first_ok: dict[str, int] = {}
    for i, r in enumerate(requests):
        first_any.setdefault(r.event_id, i)
        if 200 <= r.status < 300:
            first_ok.setdefault(r.event_id, i)
    return first_any, first_ok


def through(receiver: Receiver, produced: dict[str, list[str]], customers: Sequence[str]) -> bool:
    """Every event of these customers has had a 2xx."""
    ok = {r.event_id for r in receiver.requests if 200 <= r.status < 300}
    return all(e in ok for c in customers for e in produced[c])


def assert_in_order(receiver: Receiver, produced: dict[str, list[str]]) -> None:
    """Per customer, event k is first attempted only after event k-1's first 2xx."""
    first_any, first_ok = firsts(receiver.requests)
    for customer, events in produced.items():
        for before, after in itertools.pairwise(events):
            assert first_ok[before] < first_any[after], (
                f"{customer}: {after} went out (request #{first_any[after]}) before "
                f"{before} was received (#{first_ok[before]})"
            )
    assert receiver.overlapping_customers() == {}
    # A re-send after the kill is the same delivery: never two deliveries of one event.
    ids: dict[str, set[str]] = {}
    for r in receiver.requests:
        ids.setdefault(r.event_id, set()).add(r.delivery)
    assert all(len(v) == 1 for v in ids.values())


async def run_ordered(
    receiver: Receiver,
    settings: Settings,
    topics: list[str],
    kafka_bootstrap: str,
    replicas: int,
) -> None:
    store = await open_store(settings, run_migrations=not settings.is_postgres)
    try:
        subscription = await store.create_subscription(
            ORG, receiver.url(PATH), ("verification.created",), None, ordering=Ordering.CUSTOMER
        )
    finally:
        await store.close()
    seed = random.randrange(1 << 30)
    # Each answer takes a moment, so that overlapping requests would show.
    receiver.set(PATH, Behaviour(status=200, delay=0.02))
    receiver.fail_at_random(FAILURE_RATE, seed)
    receiver.set_customer(BLOCKED, Behaviour(status=503))
    env = service_env(
        settings, topics, f"ordered-{uuid.uuid4().hex[:8]}", WEBHOOKS_RETRY_SCHEDULE=RETRIES
    )
    services = [ServiceProcess(env) for _ in range(replicas)]
    others = [c for c in CUSTOMERS if c != BLOCKED]
    try:
        for service in services:
            await service.start()
        for service in services:
            await service.wait_ready()
        produced = await produce(kafka_bootstrap, topics[0])
        total = len(others) * PER_CUSTOMER

        # SIGKILL (one replica) once about a third of the healthy events are through; restart it.
        def healthy_ok() -> int:
            return sum(1 for r in receiver.requests if r.status == 200)

        await receiver.wait_for(lambda: healthy_ok() >= total // 3, 60, "a third delivered")
        await services[0].kill()
        killed_at = len(receiver.requests)
        services[0] = await ServiceProcess(env).start()

        await receiver.wait_for(lambda: through(receiver, produced, others), 60, "the others")
        # Still held up: only its head was tried, and the row says one customer is blocked.
        assert {r.event_id for r in receiver.requests if r.customer == BLOCKED} == {
            produced[BLOCKED][0]
        }
        store = await open_store(settings, run_migrations=False)
        try:
            summary = (await store.subscription_summaries([subscription.id]))[subscription.id]
            retrying = await store.list_deliveries(
                ORG,
                subscription.id,
                DeliveryFilter(status=DeliveryStatus.RETRYING),
                PageRequest(100, None),
            )
        finally:
            await store.close()
        # At least its customer. Another may be retrying for a moment too: a delivery its
        # receiver had answered 2xx, resent after the kill (its outcome was not recorded
        # yet), can meet one of the random 500s.
        assert summary.blocked_customers >= 1
        assert summary.oldest_blocked is not None
        assert produced[BLOCKED][0] in {row.event_id for row in retrying.rows}
        receiver.set_customer(BLOCKED, None)
        await receiver.wait_for(lambda: through(receiver, produced, CUSTOMERS), 60, "everyone")
    finally:
        for service in services:
            await service.stop()
    assert killed_at < len(receiver.requests)
    assert_in_order(receiver, produced)
    store = await open_store(settings, run_migrations=False)
    try:
        summary = (await store.subscription_summaries([subscription.id]))[subscription.id]
    finally:
        await store.close()
    assert summary.delivery_count == len(CUSTOMERS) * PER_CUSTOMER
    assert summary.pending_count == 0
    assert summary.blocked_customers == 0
    failures = sum(1 for r in receiver.requests if r.status >= 500)
    assert failures > len(CUSTOMERS), (failures, seed)  # the random failures did happen


async def test_ordered_delivery_survives_failures_and_a_kill_on_sqlite(
    tmp_path: Path, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> None:
    settings = service_settings(f"sqlite:///{tmp_path}/ordered.db", kafka_bootstrap)
    await run_ordered(receiver, settings, topics, kafka_bootstrap, replicas=1)


async def test_ordered_delivery_survives_failures_and_a_kill_on_postgres(
    fresh_postgres_url: str, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> None:
    settings = service_settings(fresh_postgres_url, kafka_bootstrap)
    await run_ordered(receiver, settings, topics, kafka_bootstrap, replicas=1)


async def test_ordered_delivery_with_two_postgres_replicas_one_killed(
    fresh_postgres_url: str, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> None:
    settings = service_settings(fresh_postgres_url, kafka_bootstrap)
    await run_ordered(receiver, settings, topics, kafka_bootstrap, replicas=2)

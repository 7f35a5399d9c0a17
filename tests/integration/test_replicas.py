"""Crash safety and several replicas, with real service processes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from service.samples import sample_event
from service.settings import Settings
from service.store import Store, open_store
from tests.support.process import ServiceProcess, service_env, service_settings
from tests.support.stall_before_commit import MARK as STALL_MARK
from tools.receiver import Receiver

STALL_MODULE = "tests.support.stall_before_commit"


async def produce(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    events = []
    try:
        for i in range(count):
            event = sample_event("verification.created", "org_r", datetime.now(UTC))
            event["data"]["customerId"] = f"cus_{i}"
            events.append(event)
            await producer.send(topic, orjson.dumps(event), key=f"cus_{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    return events


async def delivery_rows(store: Store, subscription_ids: list[str]) -> int:
    summary = await store.subscription_summaries(subscription_ids)
    return sum(h.delivery_count for h in summary.values())


def delivered_pairs(receiver: Receiver) -> set[tuple[str, str]]:
    return {(r.path, orjson.loads(r.body)["id"]) for r in receiver.requests}


async def test_sigkill_before_commit_loses_nothing_and_duplicates_no_record(
    store: Store,
    settings_for: Settings,
    topics: list[str],
    kafka_bootstrap: str,
    kafka_admin: AIOKafkaAdminClient,
    receiver: Receiver,
) -> None:
    settings = settings_for.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap})
    subs = [
        await store.create_subscription(
            "org_r", receiver.url(path), ("verification.created",), None
        )
        for path in ("one", "two")
    ]
    group = f"crash-{uuid.uuid4().hex[:8]}"
    events = await produce(kafka_bootstrap, topics[0], 20)

    # Killed from outside at its first offset commit, right after its first batch is recorded.
    doomed = ServiceProcess(service_env(settings, topics, group), module=STALL_MODULE)
    await doomed.start()
    await doomed.wait_for_log(STALL_MARK)
    await doomed.kill()
    assert doomed.process is not None
    assert doomed.process.returncode == -9
    recorded = await delivery_rows(store, [s.id for s in subs])
    assert recorded > 0
    offsets = await kafka_admin.list_consumer_group_offsets(group)
    assert all(meta.offset <= 0 for meta in offsets.values()), offsets

    survivor = ServiceProcess(service_env(settings, topics, group))
    await survivor.start()
    try:
        expected = {(path, e["id"]) for path in ("one", "two") for e in events}
        await receiver.wait_for(
            lambda: delivered_pairs(receiver) >= expected,
            timeout=60,
            what="every event at every subscription",
        )
        assert delivered_pairs(receiver) == expected
        assert await delivery_rows(store, [s.id for s in subs]) == len(expected)
        # Each (event, subscription) kept its one delivery id, across the crash and replay.
        ids: dict[tuple[str, str], set[str]] = {}
        for r in receiver.requests:
            key = (r.path, orjson.loads(r.body)["id"])
            ids.setdefault(key, set()).add(r.headers["X-Identity-Delivery"])
        assert all(len(v) == 1 for v in ids.values())
    finally:
        assert await survivor.stop() == 0
    assert any('"dispatch.drained"' in line for line in survivor.logs)


async def test_two_replicas_on_postgres_split_partitions_and_record_each_pair_once(
    fresh_postgres_url: str,
    topics: list[str],
    kafka_bootstrap: str,
    receiver: Receiver,
) -> None:
    # Several replicas share work only on PostgreSQL; SQLite is the one-process store.
    settings = service_settings(fresh_postgres_url, kafka_bootstrap)
    store = await open_store(settings, run_migrations=False)
    subs = [
        await store.create_subscription(
            "org_r", receiver.url(path), ("verification.created",), None
        )
        for path in ("one", "two", "three")
    ]
    group = f"pair-{uuid.uuid4().hex[:8]}"
    replicas = [ServiceProcess(service_env(settings, topics, group)) for _ in range(2)]
    try:
        for replica in replicas:
            await replica.start()
        for replica in replicas:
            await replica.wait_ready()
        # Both hold partitions once the group has settled: until the first has logged its
        # share of the second generation, its log still shows the whole of the first.
        async with asyncio.timeout(30):
            while not _settled(*(_assigned(r) for r in replicas)):
                await asyncio.sleep(0.1)
        first, second = (_assigned(r) for r in replicas)
        assert first
        assert second
        assert not first & second
        events = await produce(kafka_bootstrap, topics[0], 60)
        expected = {(path, e["id"]) for path in ("one", "two", "three") for e in events}
        await receiver.wait_for(
            lambda: delivered_pairs(receiver) >= expected, timeout=60, what="every pair"
        )
        await asyncio.sleep(1.0)
        assert await delivery_rows(store, [s.id for s in subs]) == len(expected)
        by_id: dict[str, int] = {}
        for r in receiver.requests:
            by_id[r.headers["X-Identity-Delivery"]] = (
                by_id.get(r.headers["X-Identity-Delivery"], 0) + 1
            )
        assert len(by_id) == len(expected)
    finally:
        for replica in replicas:
            await replica.stop()
        await store.close()


def _settled(first: set[str], second: set[str]) -> bool:
    return bool(first) and bool(second) and not first & second


def _assigned(replica: ServiceProcess) -> set[str]:
    """The partitions of the replica's latest assignment, from its logs."""
    latest: set[str] = set()
    for line in replica.logs:
        if '"ingest.assigned"' in line:
            latest = set(orjson.loads(line)["partitions"])
    return latest

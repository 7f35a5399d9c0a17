"""Faults with a real broker: a dead-letter topic that refuses writes while poison records arrive
among valid ones.

The shared test broker creates a missing topic on the first write to it
(`auto.create.topics.enable=true`, deploy/local/kafka.sh), so a missing dead-letter topic cannot
stay missing there; the unit tests cover that error (tests/unit/test_ingest.py). Here the topic
exists but takes no record at all (`max.message.bytes` of 1: too small even without the value), a
fault real clusters see after a bad config change, and "creating it properly" is setting a sane
limit. From the service's side it is the same story: every dead-letter write fails until an
operator acts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from service.app import create_app
from service.appkeys import INDEX, INGEST, METRICS, READINESS, STORE
from service.samples import sample_event
from tests.conftest import CATALOG_TOPICS
from tests.support.process import service_settings
from tools.receiver import Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

POISON = [b"not json", b"[1, 2, 3]", b"{" * 10]


async def until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.1)
    assert condition(), what


async def test_a_refusing_dead_letter_topic_holds_only_the_poisoned_partition(
    kafka_admin: AIOKafkaAdminClient, kafka_bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    sources = [f"c{run}.identity.{event}" for event in CATALOG_TOPICS]
    dlq, group = f"c{run}.dlq", f"g-{run}"
    await kafka_admin.create_topics(
        [NewTopic(name, 3, 1) for name in sources]
        + [NewTopic(dlq, 1, 1, topic_configs={"max.message.bytes": "1"})]
    )
    settings = service_settings(
        f"sqlite:///{tmp_path}/webhooks.db",
        kafka_bootstrap,
        allow_private_targets=True,
        kafka_topics=sources,
        kafka_dlq_topic=dlq,
        kafka_group_id=group,
        poll_interval=0.1,
        shutdown_grace=2.0,
    )
    app = create_app(settings)
    runner = web.AppRunner(app)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await runner.setup()
        await until(lambda: app[INGEST].joined, "the consumer joined")
        await app[STORE].create_subscription(
            "org_a", receiver.url("ok"), ("verification.created",), "t"
        )
        await app[INDEX].refresh(force=True)
        topic = sources[0]

        async def send(partition: int, value: bytes) -> str:
            await producer.send_and_wait(topic, value, key=b"cus_1", partition=partition)
            return str(orjson.loads(value)["id"]) if value.startswith(b'{"') else ""

        def good() -> bytes:
            return orjson.dumps(sample_event("verification.created", "org_a", datetime.now(UTC)))

        # Partition 0: a good record, the poison, a good one; partition 1: poison only;
        # partition 2: good records only.
        before = await send(0, good())
        for value in POISON:
            await send(0, value)
        after = await send(0, good())
        await send(1, POISON[0])
        clean = [await send(2, good()), await send(2, good())]

        def delivered() -> set[str]:
            return {str(orjson.loads(r.body)["id"]) for r in receiver.at("ok")}

        async def committed() -> dict[int, int]:
            offsets = await kafka_admin.list_consumer_group_offsets(group)
            return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic}

        # While the topic refuses: the clean partition flows and is committed, the consumer is
        # not ready, and nothing is committed past a poison record in either held partition.
        await until(lambda: {before, *clean} <= delivered(), "the valid records delivered")
        readiness = app[READINESS]
        report: dict[str, bool] = {}

        async def not_ready() -> bool:
            report.update(await readiness.report())
            return report["dead_letter"] is False

        async with asyncio.timeout(30):
            while not await not_ready():
                await asyncio.sleep(0.1)
        metrics = app[METRICS].registry
        assert metrics.get_sample_value("webhooks_partitions_held_for_dlq") == 2
        refused = metrics.get_sample_value(
            "webhooks_dlq_write_failures_total", {"error": "MessageSizeTooLargeError"}
        )
        assert (refused or 0) >= 1
        async with asyncio.timeout(30):
            while (await committed()).get(2) != 2:
                await asyncio.sleep(0.2)
        # Consumption goes on meanwhile: a record produced now is delivered too.
        late = await send(2, good())
        await until(lambda: late in delivered(), "a valid record produced while held")
        for _ in range(3):
            held = await committed()
            assert held.get(0, 0) <= 1, held  # offset 1 is the first poison
            assert held.get(1, 0) == 0, held
            await asyncio.sleep(0.5)

        # An operator fixes the topic: every poison record is dead-lettered, with its value,
        # the partitions move on, and the service is ready again.
        await kafka_admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, dlq, {"max.message.bytes": "1048588"})]
        )
        dead = await read_all(kafka_bootstrap, dlq, len(POISON) + 1)
        where = sorted(
            (
                int(dict(r.headers)["x-dlq-source-partition"]),
                int(dict(r.headers)["x-dlq-source-offset"]),
            )
            for r in dead
        )
        assert where == [(0, 1), (0, 2), (0, 3), (1, 0)]
        assert sorted(r.value or b"" for r in dead) == sorted([*POISON, POISON[0]])
        await until(lambda: after in delivered(), "the valid record after the poison")
        async with asyncio.timeout(30):
            while await committed() != {0: 5, 1: 1, 2: 3}:
                await asyncio.sleep(0.2)
        assert (await readiness.report())["dead_letter"] is True
    finally:
        await runner.cleanup()
        await producer.stop()
        await kafka_admin.delete_topics([*sources, dlq])


async def read_all(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """`count` records of `topic` from its start (waits up to a minute: the service retries a
    refused write after a backoff of up to 30 s)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < count:
                batch = await consumer.getmany(timeout_ms=500)
                got += [r for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return got

"""The local stack is real: a record goes through the broker and back, PostgreSQL answers."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition


async def test_record_round_trips_through_the_broker_with_a_manual_commit(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, b'{"hello": "kafka"}', key=b"cus_1", headers=[("x-sibling-service", b"orch")]
        )
    finally:
        await producer.stop()

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while not records:
                batch = await consumer.getmany(timeout_ms=500)
                records = [r for rs in batch.values() for r in rs]
        (record,) = records
        assert record.value == b'{"hello": "kafka"}'
        assert record.key == b"cus_1"
        assert dict(record.headers) == {"x-sibling-service": b"orch"}
        partition = TopicPartition(topic, sent.partition)
        assert await consumer.committed(partition) is None
        await consumer.commit({partition: record.offset + 1})
        assert await consumer.committed(partition) == sent.offset + 1
    finally:
        await consumer.stop()


async def test_postgres_answers_a_query(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        assert await connection.fetchval("select 40 + 2") == 42
        version = await connection.fetchval("show server_version_num")
        assert int(version) >= 130000
    finally:
        await connection.close()

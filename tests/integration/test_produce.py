"""The development producer as the demos run it: `python -m tools.produce …` in a child process,
with Kafka's address and topics in `WEBHOOKS_*` variables."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from service.events import Accepted, Rejected, parse_event
from tests.support.commands import Result, run_module


async def run_produce(*args: str, env: Mapping[str, str], cwd: Path) -> Result:
    return await run_module("tools.produce", *args, env=env, cwd=cwd)


async def read_all(bootstrap: str, topics: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record now in `topics` (three partitions each), without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


def kafka_env(bootstrap: str, topics: list[str]) -> dict[str, str]:
    return {
        "WEBHOOKS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "WEBHOOKS_KAFKA_TOPICS": ",".join(topics[:3]),
    }


async def test_produce_publishes_catalog_events_keyed_by_customer(
    kafka_bootstrap: str, topics: list[str], tmp_path: Path
) -> None:
    args = ["--count", "5", "--org", "org_cli", "--sibling-service", "orchestration"]
    result = await run_produce(*args, env=kafka_env(kafka_bootstrap, topics), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert re.fullmatch(r"produced 5 events in [0-9.]+ s \([0-9]+/s\)\n", result.stdout)
    records = await read_all(kafka_bootstrap, topics)
    assert len(records) == 5
    per_event: dict[str, int] = {}
    for record in records:
        parsed = parse_event(record.value, 256 * 1024)
        assert isinstance(parsed, Accepted)
        assert record.topic.endswith("." + parsed.event)
        assert parsed.org_id == "org_cli"
        assert parsed.event_id.startswith("evt_")
        assert record.key == orjson.loads(parsed.body)["data"]["customerId"].encode()
        assert list(record.headers) == [("x-sibling-service", b"orchestration")]
        per_event[parsed.event] = per_event.get(parsed.event, 0) + 1
    # The catalog takes turns: 2, 2 and 1 of five.
    assert per_event == {
        "verification.created": 2,
        "customer.kyc_updated": 2,
        "review.overridden": 1,
    }


async def test_produce_one_event_with_poison_records(
    kafka_bootstrap: str, topics: list[str], tmp_path: Path
) -> None:
    env = kafka_env(kafka_bootstrap, topics)

    args = ["--count", "2", "--event", "review.overridden", "--invalid", "7"]
    result = await run_produce(*args, env=env, cwd=tmp_path)

    assert result.code == 0, result.stderr
    assert result.stdout.startswith("produced 2 events and 7 invalid records in ")
    records = await read_all(kafka_bootstrap, topics[:3])
    assert {r.topic for r in records} == {topics[2]}
    parsed = [parse_event(r.value, 256 * 1024) for r in records]
    assert sum(isinstance(p, Accepted) for p in parsed) == 2
    reasons = {p.reason for p in parsed if isinstance(p, Rejected)}
    assert len(reasons) == 7
    assert "too_large" in reasons
    assert "empty" in reasons
    assert all(not r.headers for r in records)


async def test_produce_at_a_rate_follows_the_schedule(
    kafka_bootstrap: str, topics: list[str], tmp_path: Path
) -> None:
    env = kafka_env(kafka_bootstrap, topics)

    result = await run_produce("--count", "11", "--rate", "50", env=env, cwd=tmp_path)

    assert result.code == 0, result.stderr
    match = re.match(r"produced 11 events in ([0-9.]+) s", result.stdout)
    assert match is not None, result.stdout
    # Event i leaves at i/50 s: the last one 0.2 s after the first.
    assert 0.19 <= float(match.group(1)) < 5


async def test_produce_needs_a_topic_for_each_event(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        "WEBHOOKS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "WEBHOOKS_KAFKA_TOPICS": "identity.verification.created",
    }

    result = await run_produce("--event", "review.overridden", env=env, cwd=tmp_path)

    assert result.code == 2
    assert "review.overridden" in result.stderr

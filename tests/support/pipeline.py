"""The whole service in this process (real Kafka in, an in-process receiver out), started as
often as a test needs: the `pipeline_factory` fixture of the pipeline and fault tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.app import create_app
from service.appkeys import INDEX, INGEST, STORE
from service.domain import Subscription
from service.settings import Settings
from service.store import Store
from tests.conftest import FAST_DELIVERY
from tools.receiver import Receiver, start_receiver


@dataclass
class Pipeline:
    settings: Settings
    app: web.Application
    store: Store
    producer: AIOKafkaProducer
    receiver: Receiver

    def topic(self, event: str) -> str:
        (topic,) = [t for t in self.settings.kafka_topics if t.endswith(event)]
        return topic

    async def subscribe(self, org: str, path: str, events: tuple[str, ...]) -> Subscription:
        subscription = await self.store.create_subscription(
            org, self.receiver.url(path), events, "t"
        )
        await self.app[INDEX].refresh(force=True)
        return subscription

    async def produce(
        self, envelope: dict[str, Any], *, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        await self.producer.send_and_wait(
            self.topic(envelope["event"]),
            orjson.dumps(envelope),
            key=str(envelope["data"].get("customerId", "")).encode(),
            headers=headers or [],
        )

    async def produce_raw(self, topic: str, value: bytes | None, key: bytes = b"k") -> None:
        await self.producer.send_and_wait(topic, value, key=key)


PipelineFactory = Callable[..., Awaitable[Pipeline]]


@pytest.fixture
async def pipeline_factory(
    settings_for: Settings, topics: list[str], kafka_bootstrap: str
) -> AsyncIterator[PipelineFactory]:
    runners: list[web.AppRunner] = []
    receivers: list[AsyncIterator[Receiver]] = []
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()

    async def make(**overrides: Any) -> Pipeline:
        settings = settings_for.model_copy(
            update={
                "kafka_bootstrap_servers": kafka_bootstrap,
                "kafka_topics": topics[:3],
                "kafka_dlq_topic": topics[3],
                "kafka_group_id": f"g-{uuid.uuid4().hex[:8]}",
                **FAST_DELIVERY,
                **overrides,
            }
        )
        receiver_cm = start_receiver()
        receivers.append(receiver_cm)
        receiver = await receiver_cm.__anext__()
        app = create_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        ingest = app[INGEST]
        async with asyncio.timeout(30):
            while not await ingest.ready():
                await asyncio.sleep(0.05)
        return Pipeline(settings, app, app[STORE], producer, receiver)

    try:
        yield make
    finally:
        for runner in runners:
            await runner.cleanup()
        for receiver_cm in receivers:
            with pytest.raises(StopAsyncIteration):
                await receiver_cm.__anext__()
        await producer.stop()

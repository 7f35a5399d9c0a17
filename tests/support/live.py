"""The whole service in-process — API, Kafka consumer, dispatcher — served on a loopback port,
with an API key, a producer and the test receiver: for tests that drive it the way a customer
and a producing service would (rotation, rate limits, static headers)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from service.app import create_app
from service.appkeys import INGEST, STORE
from service.samples import record_key, sample_event
from service.settings import Settings
from service.store import Store
from tests.conftest import FAST_DELIVERY
from tools.receiver import Receiver

BASE = "/api/identity/webhooks"
ORG = "org_live"


@dataclass
class LiveApp:
    app: web.Application
    client: TestClient[Any, Any]
    store: Store
    key: str
    receiver: Receiver
    producer: AIOKafkaProducer
    settings: Settings

    async def call(
        self, method: str, path: str = "", body: Any = None, *, key: str | None = None
    ) -> tuple[int, Any]:
        """One API call as the org's key (or `key`); the decoded JSON answer (None for none)."""
        headers = {"Authorization": f"Bearer {key or self.key}"}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        async with self.client.request(method, BASE + path, data=data, headers=headers) as r:
            raw = await r.read()
            return r.status, orjson.loads(raw) if raw else None

    async def subscribe(
        self, path: str, *, at: Receiver | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A subscription to verification.created at `path` of the receiver (or of `at`),
        through the API; `fields` are more of the POST body."""
        url = (at or self.receiver).url(path)
        body = {"url": url, "events": ["verification.created"], **fields}
        status, created = await self.call("POST", body=body)
        assert status == 201, created
        assert isinstance(created, dict)
        return created

    async def produce(self, count: int = 1) -> list[dict[str, Any]]:
        """`count` verification.created events of the org, produced and acknowledged."""
        (topic,) = [t for t in self.settings.kafka_topics if t.endswith("verification.created")]
        now = datetime.now(UTC)
        events = [sample_event("verification.created", ORG, now) for _ in range(count)]
        sent = [await self.producer.send(topic, orjson.dumps(e), key=record_key(e)) for e in events]
        await asyncio.gather(*sent)
        return events


@asynccontextmanager
async def live_app(
    settings: Settings,
    topics: Sequence[str],
    kafka_bootstrap: str,
    receiver: Receiver,
    **overrides: Any,
) -> AsyncIterator[LiveApp]:
    """The service on `settings`' store, consuming `topics` (three, then the DLQ)."""
    settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_bootstrap,
            "kafka_topics": list(topics[:3]),
            "kafka_dlq_topic": topics[3],
            "kafka_group_id": f"g-{uuid.uuid4().hex[:8]}",
            "allow_private_targets": True,
            **FAST_DELIVERY,
            **overrides,
        }
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    try:
        await client.start_server()
        async with asyncio.timeout(30):
            while not await app[INGEST].ready():
                await asyncio.sleep(0.05)
        store = app[STORE]
        _, key = await store.create_api_key(ORG, "tests")
        yield LiveApp(app, client, store, key, receiver, producer, settings)
    finally:
        await client.close()
        await producer.stop()

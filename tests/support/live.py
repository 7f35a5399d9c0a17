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
from multidict import CIMultiDictProxy

from service.app import create_app
from service.appkeys import INGEST, STORE
from service.samples import record_key, sample_event
from service.settings import Settings
from service.store import Store
from tests.conftest import FAST_DELIVERY
from tools.receiver import Received, Receiver

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
        now = datetime.now(UTC)
        events = [sample_event("verification.created", ORG, now) for _ in range(count)]
        await self.send_events([orjson.dumps(e) for e in events], [record_key(e) for e in events])
        return events

    async def send_events(self, values: Sequence[bytes], keys: Sequence[bytes]) -> None:
        """Record values (verification.created envelopes) produced and acknowledged."""
        (topic,) = [t for t in self.settings.kafka_topics if t.endswith("verification.created")]
        sent = [
            await self.producer.send(topic, value, key=key)
            for value, key in zip(values, keys, strict=True)
        ]
        await asyncio.gather(*sent)


async def send_test(live: LiveApp, subscription_id: str, path: str) -> Received:
    """`POST …/test`, answered 2xx by the receiver; the request the receiver got."""
    before = len(live.receiver.at(path))
    status, result = await live.call("POST", f"/{subscription_id}/test")
    assert status == 200, result
    assert result["status"] == "sent", result
    got = live.receiver.at(path)
    assert len(got) == before + 1
    assert got[-1].delivery == result["deliveryId"]
    return got[-1]


async def through_kafka(live: LiveApp, path: str, value: bytes | None = None) -> Received:
    """One event produced to Kafka (a sample, or the record `value`) and delivered by the
    dispatcher; the request received."""
    if value is None:
        (event,) = await live.produce()
        event_id = event["id"]
    else:
        event_id = orjson.loads(value)["id"]
        await live.send_events([value], [b"k"])
    await live.receiver.wait_for(
        lambda: any(r.event_id == event_id for r in live.receiver.at(path)),
        what=f"event {event_id}",
    )
    (got,) = [r for r in live.receiver.at(path) if r.event_id == event_id]
    assert orjson.loads(got.body)["id"] == event_id
    return got


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


async def two_deliveries(live: LiveApp, subscription_id: str, path: str) -> list[Received]:
    """One `/test` and one event through Kafka: the two requests as received."""
    return [await send_test(live, subscription_id, path), await through_kafka(live, path)]


def header_values(got: Received, name: str) -> list[str]:
    """Every value of a header as received (the receiver keeps aiohttp's multidict)."""
    assert isinstance(got.headers, CIMultiDictProxy)
    return got.headers.getall(name, [])

"""Personal data never reaches the disk, the logs or the API in clear (docs/personal-data.md).

Marker strings — a fake NIK as `data.customerId`, a sentence as `review.overridden`'s
`data.reason`, a token in a static `Authorization` header — go through Kafka and the real service
(a child process, on each store) to a receiver that answers 500 once, then 200, each time with
the payload it got, so the attempt log keeps response excerpts holding the markers too. The
receiver gets every marker; the raw bytes of the database's files (while the service runs and
after it stopped), the service's logs and every API answer do not hold them, except where the
API shows the API key's holder their own data: a delivery's detail shows its payload and the
receiver's answers. The header's value, write-only, is in no API answer (docs/api.md).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from service.samples import sample_event
from service.signing import QUANTUM_HEADER, verify_signature
from service.store import open_store
from tests.support.process import ServiceProcess, service_env, service_settings
from tests.support.raw import holding, postgres_holding, sqlite_files
from tools.receiver import Receiver

pytestmark = pytest.mark.integration

ORG = "org_markers"
BASE = "/api/identity/webhooks"


@dataclass(frozen=True)
class Markers:
    """Values unique to one run: other tests share the PostgreSQL server and its WAL."""

    nik: str
    reason: str
    token: str

    @classmethod
    def new(cls) -> Markers:
        run = uuid.uuid4().hex
        return cls(
            nik="3174" + "".join(secrets.choice("0123456789") for _ in range(12)),
            reason=f"Applicant's mother's maiden name is Kartini {run[:12]}, confirmed by phone",
            token=f"tok-{run[12:]}",
        )

    @property
    def personal(self) -> dict[str, bytes]:
        """What an event says about its customer."""
        return {"nik": self.nik.encode(), "reason": self.reason.encode()}

    @property
    def header(self) -> bytes:
        return self.token.encode()

    @property
    def every(self) -> set[bytes]:
        return {*self.personal.values(), self.header}


@dataclass
class Client:
    http: aiohttp.ClientSession
    base: str
    key: str
    answers: dict[str, str]  # every answer's text, by what was asked

    async def get(self, path: str, *, authorized: bool = True) -> str:
        headers = {"Authorization": f"Bearer {self.key}"} if authorized else {}
        async with self.http.get(self.base + path, headers=headers) as response:
            text = await response.text()
            assert response.status == 200, (path, text)
        self.answers[path] = text
        return text

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.http.post(self.base + path, json=body, headers=headers) as response:
            text = await response.text()
            assert response.status == 201, text
        self.answers[f"POST {path}"] = text
        found: dict[str, Any] = orjson.loads(text)
        return found


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    started = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


def envelopes(markers: Markers) -> list[dict[str, Any]]:
    """A verification.created and a review.overridden about the marked customer."""
    now = datetime.now(UTC)
    created = sample_event("verification.created", ORG, now)
    overridden = sample_event("review.overridden", ORG, now)
    created["data"]["customerId"] = overridden["data"]["customerId"] = markers.nik
    overridden["data"]["reason"] = markers.reason
    return [created, overridden]


async def test_markers_reach_the_receiver_and_nothing_else_in_clear(
    database_url: str,
    topics: list[str],
    kafka_bootstrap: str,
    receiver: Receiver,
    producer: AIOKafkaProducer,
) -> None:
    markers = Markers.new()
    settings = service_settings(database_url, kafka_bootstrap)
    store = await open_store(settings, run_migrations=not settings.is_postgres)
    try:
        _, key = await store.create_api_key(ORG, "markers")
    finally:
        await store.close()
    env = service_env(
        settings, topics, WEBHOOKS_RETRY_SCHEDULE="200ms,200ms,1s", WEBHOOKS_LOG_LEVEL="debug"
    )
    service = await ServiceProcess(env).start()
    try:
        await service.wait_ready()
        async with aiohttp.ClientSession() as http:
            api = Client(http, f"http://127.0.0.1:{service.port}", key, {})
            created = await api.post(
                BASE,
                {
                    "url": receiver.url("echo"),
                    "events": ["verification.created", "review.overridden"],
                    "headers": {"Authorization": f"Bearer {markers.token}"},
                },
            )
            sent = envelopes(markers)
            for envelope in sent:
                await producer.send_and_wait(
                    next(t for t in topics if t.endswith(envelope["event"])),
                    orjson.dumps(envelope),
                    key=markers.nik.encode(),  # as producers do: the customer id
                )
            await receiver.wait_for(lambda: receiver.ok["echo"] == 2, what="both delivered")
            deliveries = await settled(api, created["id"])

            # The receiver got every marker, signed with the subscription's secret.
            for got in receiver.at("echo"):
                assert got.headers["Authorization"] == f"Bearer {markers.token}"
                assert markers.nik.encode() in got.body
                verify_signature(created["secret"], got.headers[QUANTUM_HEADER], got.body)
            assert any(markers.reason.encode() in got.body for got in receiver.at("echo"))

            # While the service runs: not on disk.
            await not_on_disk(database_url, markers, [str(e["id"]) for e in sent])

            # Not in any answer, but where the API shows the key's holder their own data.
            await api.get(f"{BASE}/{created['id']}")
            await api.get(BASE)
            await api.get(f"{BASE}/{created['id']}/deliveries")
            await api.get(f"{BASE}/{created['id']}/deliveries?status=sent")
            details = [
                await api.get(f"{BASE}/{created['id']}/deliveries/{delivery}")
                for delivery in deliveries
            ]
            for path in ("/readyz", "/healthz", "/metrics", "/console"):
                await api.get(path, authorized=False)
            for asset in ("app.js", "app.css"):
                await api.get(f"/console/{asset}", authorized=False)
            await api.get(f"{BASE}/event-types")
            shown = " ".join(details)
            for marker in markers.personal.values():
                assert marker.decode() in shown  # the payloads, and the receiver's echoes
            excerpts = [
                attempt["responseExcerpt"]
                for detail in details
                for attempt in orjson.loads(detail)["attempts"]
            ]
            assert len(excerpts) == 4
            assert all(markers.nik in excerpt for excerpt in excerpts)
            # A sensitive header is write-only: shown by name, its value in no answer at all.
            with_headers = {f"{BASE}/{created['id']}", BASE}
            for asked, answer in api.answers.items():
                assert markers.token not in answer, asked
                if asked in with_headers:
                    assert '"sensitiveHeaders":["Authorization"]' in answer, asked
                if not asked.startswith(f"{BASE}/{created['id']}/deliveries/"):
                    for marker in markers.personal.values():
                        assert marker.decode() not in answer, asked
    finally:
        code = await service.stop()
    assert code == 0, "".join(service.logs[-20:])

    # After it stopped: not on disk, and never in a line it wrote.
    await not_on_disk(database_url, markers, [str(e["id"]) for e in sent])
    said = "".join(service.logs + service.output)
    assert deliveries[0] in said  # the logs were read, and they name the deliveries
    for marker in markers.every:
        assert marker.decode() not in said


async def settled(api: Client, subscription_id: str) -> list[str]:
    """The subscription's two deliveries once both are recorded as sent after two attempts."""
    async with asyncio.timeout(20):
        while True:
            listed = orjson.loads(await api.get(f"{BASE}/{subscription_id}/deliveries"))
            rows = listed["rows"]
            if len(rows) == 2 and all(
                (row["status"], row["attemptCount"]) == ("sent", 2) for row in rows
            ):
                return [row["id"] for row in rows]
            await asyncio.sleep(0.1)


async def not_on_disk(database_url: str, markers: Markers, event_ids: list[str]) -> None:
    """No marker in the database's files; the event ids, kept in clear, are (so the files
    read are the ones written)."""
    needles = markers.every | {event_id.encode() for event_id in event_ids}
    if database_url.startswith("sqlite"):
        found = holding(sqlite_files(database_url), needles)
    else:
        found = await postgres_holding(database_url, needles)
    assert found == {event_id.encode() for event_id in event_ids}
